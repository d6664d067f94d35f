"""Reading sources, the recipe's filters, and the checks that stop a bad source before any output."""

import json
import shutil

import prepare_data
import pytest
import yaml
from conftest import ROOT, base_tokenizer, tiny_recipe_at

from smolrecipe.data.sources import FieldIn, build_reader, check_source, local_files
from smolrecipe.errors import UserError
from smolrecipe.recipe.schema import Source


def _jsonl(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _read(source: Source) -> list:
    return list(build_reader(source)(None, rank=0, world_size=1))


def test_a_path_may_be_a_file_a_folder_or_a_glob(tmp_path):
    _jsonl(tmp_path / "a" / "x.jsonl", [{"text": "one"}])
    _jsonl(tmp_path / "a" / "y.jsonl", [{"text": "two"}])
    assert local_files(str(tmp_path / "a")) == (str(tmp_path / "a"), "*.jsonl*", "jsonl")
    assert local_files(str(tmp_path / "a" / "x.jsonl")) == (str(tmp_path / "a"), "x.jsonl", "jsonl")
    assert local_files(str(tmp_path / "a" / "*.jsonl"))[:2] == (str(tmp_path / "a"), "*.jsonl")
    for path in ("a", "a/x.jsonl", "a/*.jsonl"):
        docs = _read(Source(domain="web", path=str(tmp_path / path)))
        assert [d.text for d in docs] == (["one"] if path.endswith("x.jsonl") else ["one", "two"])


def test_parquet_sources_are_read(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "p").mkdir()
    pq.write_table(pa.Table.from_pylist([{"content": "def f(): pass", "lang": "python"}]), tmp_path / "p" / "0.parquet")
    docs = _read(Source(domain="code", path=str(tmp_path / "p"), text_field="content"))
    assert docs[0].text == "def f(): pass" and docs[0].metadata["lang"] == "python"


def test_text_template_joins_fields_and_keeps_the_rest_as_metadata(tmp_path):
    _jsonl(tmp_path / "m.jsonl", [{"problem": "2+2?", "generated_solution": "4", "source": "x"}])
    source = Source(domain="math", path=str(tmp_path / "m.jsonl"), text_template="{problem}\n\n{generated_solution}")
    (doc,) = _read(source)
    assert doc.text == "2+2?\n\n4" and doc.metadata["source"] == "x" and "problem" not in doc.metadata


def test_field_in_keeps_only_listed_values(tmp_path):
    from datatrove.data import Document

    keep = FieldIn("int_score", [4, 5])
    docs = [Document(text="t", id=str(i), metadata={"int_score": s}) for i, s in enumerate([2, 3, 4, 5])]
    docs.append(Document(text="t", id="x", metadata={}))
    assert [keep.filter(d) is True for d in docs] == [False, False, True, True, False]
    assert keep.filter(docs[-1]) == (False, "int_score_missing")


def test_missing_path_is_one_line_naming_the_field(tmp_path):
    with pytest.raises(UserError) as exc:
        check_source("prose", Source(domain="web", path=str(tmp_path / "nope")))
    assert exc.value.field == "sources.prose.path" and "does not exist" in exc.value.problem


def test_absent_text_field_lists_the_fields_there_are(tmp_path):
    _jsonl(tmp_path / "d.jsonl", [{"content": "x", "id": 1}])
    with pytest.raises(UserError) as exc:
        check_source("code", Source(domain="code", path=str(tmp_path / "d.jsonl")))
    assert exc.value.field == "sources.code.text_field" and "'text'" in exc.value.problem and "content" in exc.value.fix
    with pytest.raises(UserError) as exc:
        check_source("m", Source(domain="math", path=str(tmp_path / "d.jsonl"), text_template="{problem} {content}"))
    assert exc.value.field == "sources.m.text_template" and "'problem'" in exc.value.problem


def test_filter_arguments_are_checked_against_the_datatrove_class(tmp_path):
    _jsonl(tmp_path / "d.jsonl", [{"text": "x"}])
    source = Source(domain="web", path=str(tmp_path / "d.jsonl"),
                    filters=[{"name": "gopher_quality", "args": {"min_doc_wrds": 50}}])
    with pytest.raises(UserError) as exc:
        check_source("web", source)
    assert exc.value.field == "sources.web.filters[0].args" and "min_doc_wrds" in exc.value.problem


def test_an_unknown_filter_name_is_a_recipe_error(tiny_dict, write_recipe):
    from smolrecipe.recipe.loading import load_recipe

    tiny_dict["sources"]["prose"]["filters"] = [{"name": "gopher_qualty"}]
    with pytest.raises(UserError) as exc:
        load_recipe(write_recipe(tiny_dict))
    assert "sources.prose.filters[0].name" in str(exc.value) and "gopher_quality" in str(exc.value)


# ---------------------------------------------------------------------------------------------
# The CLI stops before writing anything

def _recipe(tmp_path, tiny_tokenizer, **changes):
    """The tiny recipe reading the sources _corpus writes, with the session's trained tokenizer as its
    base (copied under tmp_path: a few dozen documents are too few to train one)."""
    path = tiny_recipe_at(tmp_path, tiny_tokenizer, tmp_path / "tiny.yaml", **changes)
    path.write_text(yaml.safe_dump(base_tokenizer(yaml.safe_load(path.read_text()), tiny_tokenizer, tmp_path / "tokenizer"),
                                   sort_keys=False))
    return path


def _corpus(tmp_path, n=20):
    """n documents per source, each "<source> document number <i>." + unique prose (passes the tiny recipe's filters)."""
    from demo.corpus import generate_records

    prose = [r["text"] for r in generate_records("prose", n, seed=7)]
    for name in ("prose", "forum", "arithmetic", "python_functions"):
        _jsonl(tmp_path / "corpus" / name / "0.jsonl", [{"text": f"{name} document number {i}. {prose[i]}"} for i in range(n)])


@pytest.mark.slow
def test_a_missing_source_stops_before_any_output(tmp_path, tiny_tokenizer, capsys):
    _corpus(tmp_path)
    recipe = _recipe(tmp_path, tiny_tokenizer)
    (tmp_path / "corpus" / "python_functions" / "0.jsonl").unlink()
    assert prepare_data.main([str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "sources.python_functions.path" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "tiny").exists()  # the other sources were not started either


@pytest.mark.slow
def test_an_empty_result_after_filtering_stops_without_a_folder(tmp_path, tiny_tokenizer, capsys):
    _corpus(tmp_path)
    recipe = _recipe(tmp_path, tiny_tokenizer)
    data = yaml.safe_load(recipe.read_text())
    data["sources"]["forum"]["filters"] = [{"name": "regex", "args": {"regex_exp": "document"}}]  # drops every doc
    recipe.write_text(yaml.safe_dump(data))
    assert prepare_data.main([str(recipe), "--source", "forum", "--workers", "1"]) != 0
    assert not (tmp_path / "tiny" / "forum").exists()


@pytest.mark.slow
def test_a_tokenizer_that_cannot_be_loaded_stops_before_any_output(tmp_path, tiny_tokenizer, capsys):
    _corpus(tmp_path)
    recipe = _recipe(tmp_path, tiny_tokenizer)
    data = base_tokenizer(yaml.safe_load(recipe.read_text()), tmp_path / "no-such-tokenizer", tmp_path / "tok")
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    assert prepare_data.main([str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "tokenizer.base" in err and "cannot load" in err
    assert not (tmp_path / "tok").exists() and not (tmp_path / "tiny").exists()


@pytest.mark.slow
def test_unknown_source_name_on_the_command_line(tmp_path, tiny_tokenizer, capsys):
    _corpus(tmp_path)
    assert prepare_data.main([str(_recipe(tmp_path, tiny_tokenizer)), "--source", "prse"]) == 2
    assert "--source" in capsys.readouterr().err


@pytest.mark.slow
def test_max_documents_caps_what_is_read(tmp_path, tiny_tokenizer):
    from smolrecipe.data.pipeline import read_manifest

    _corpus(tmp_path, n=40)
    shutil.copy(tmp_path / "corpus" / "forum" / "0.jsonl", tmp_path / "corpus" / "forum" / "1.jsonl")
    recipe = _recipe(tmp_path, tiny_tokenizer)
    data = yaml.safe_load(recipe.read_text())
    data["sources"]["forum"]["max_documents"] = 25
    recipe.write_text(yaml.safe_dump(data))
    assert prepare_data.main([str(recipe), "--source", "forum", "--workers", "1", "--tasks", "2"]) == 0
    assert read_manifest(tmp_path / "tiny" / "forum")["documents_read"] == 24  # 12 from each of the 2 tasks
    # other settings (one task) -> another fingerprint: the folder is rebuilt, the old work is cleared away
    assert prepare_data.main([str(recipe), "--source", "forum", "--workers", "1", "--tasks", "1"]) == 0
    assert read_manifest(tmp_path / "tiny" / "forum")["documents_read"] == 25
    assert len(list((tmp_path / "tiny" / ".work").glob("forum-*"))) == 1


def test_slurm_executors_chain_the_dedup_steps_with_the_recipe_cluster_settings(tmp_path, tiny_dict, write_recipe):
    from smolrecipe.data.pipeline import executors, plan_jobs
    from smolrecipe.recipe.envpaths import resolve_recipe
    from smolrecipe.recipe.loading import load_recipe

    tiny_dict["paths"]["data"] = str(tmp_path / "data")
    recipe = resolve_recipe(load_recipe(write_recipe(tiny_dict)))
    (job,) = plan_jobs(recipe, ["prose"], 8)  # prose has dedup on
    chain = executors(recipe, job, "<|endoftext|>", "slurm", workers=2)
    assert [(e.job_name.split("-")[-1], e.tasks) for e in chain] == [
        ("signatures", 8), ("buckets", 14), ("clusters", 1), ("tokenize", 8), ("publish", 1)]
    assert [e.depends for e in chain[1:]] == chain[:-1] and chain[0].depends is None
    script = chain[0].get_launch_file_contents(chain[0].get_sbatch_args(8), "run")
    assert "--partition" not in script and "--qos" not in script  # tiny names none: the site default applies
    assert "#SBATCH --time=01:00:00" in script and "#SBATCH --array=0-7" in script
    import dill  # what datatrove uses to ship each executor to its SLURM jobs

    assert [type(s).__name__ for s in dill.loads(dill.dumps(chain[3])).pipeline][-1] == "NanosetTokenizer"

    # the CPU data job's partition and limit, not the GPU training's; account and qos fall back to the cluster's
    tiny_dict["cluster"].update(partition="gpu", account="proj42", qos="high", time="48:00:00")
    tiny_dict["cluster"]["data_job"].update(partition="cpu", time="12:00:00")
    recipe = resolve_recipe(load_recipe(write_recipe(tiny_dict)))
    chain = executors(recipe, plan_jobs(recipe, ["forum"], 4)[0], "<|endoftext|>", "slurm", workers=2)
    script = chain[0].get_launch_file_contents(chain[0].get_sbatch_args(4), "run")
    for line in ("--partition=cpu", "--account=proj42", "--qos=high", "--time=12:00:00"):
        assert f"#SBATCH {line}" in script
    assert "--partition=gpu" not in script and "gres" not in script


@pytest.mark.slow
def test_filtered_documents_are_counted_per_filter_and_reason(tmp_path, tiny_tokenizer):
    from smolrecipe.data.pipeline import read_manifest

    _corpus(tmp_path, n=30)
    recipe = _recipe(tmp_path, tiny_tokenizer)
    data = yaml.safe_load(recipe.read_text())
    data["sources"]["forum"]["filters"] = [{"name": "regex", "args": {"regex_exp": r"number 1\d\."}}]  # 10..19
    recipe.write_text(yaml.safe_dump(data))
    assert prepare_data.main([str(recipe), "--source", "forum", "--workers", "1"]) == 0
    manifest = read_manifest(tmp_path / "tiny" / "forum")
    assert manifest["filters"] == [{"name": "regex", "in": 30, "removed": 10, "reasons": {}}]  # regex gives no reason
    assert manifest["documents_kept"] == 20


def test_hub_sources_go_through_load_dataset_which_also_takes_a_local_folder(tmp_path):
    """The hub code path (datatrove's HuggingFaceDatasetReader, streaming), on a local dataset folder
    laid out like a hub repo: a FineWeb-Edu-like sample kept at int_score 4-5 by `field_in`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "hub" / "data").mkdir(parents=True)
    rows = [{"text": f"doc {i}", "id": f"d{i}", "int_score": i % 6} for i in range(12)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "hub" / "data" / "train-00000-of-00001.parquet")
    source = Source(domain="web", hf=str(tmp_path / "hub"), split="train",
                    filters=[{"name": "field_in", "args": {"field": "int_score", "values": [4, 5]}}])
    check_source("fineweb_edu", source)
    docs = _read(source)
    assert [d.text for d in docs] == [r["text"] for r in rows]
    keep = FieldIn("int_score", [4, 5])
    assert [d.text for d in docs if keep.filter(d) is True] == ["doc 4", "doc 5", "doc 10", "doc 11"]
    with pytest.raises(UserError) as exc:
        check_source("fineweb_edu", source.model_copy(update={"text_field": "content"}))
    assert exc.value.field == "sources.fineweb_edu.text_field" and "int_score" in exc.value.fix


def test_slurm_executor_without_sbatch_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    assert prepare_data.main([str(ROOT / "recipes" / "tiny.yaml"), "--executor", "slurm"]) == 2
    assert "--executor: slurm needs `sbatch`" in capsys.readouterr().err


# --- chat sources (messages_field): instruction data in a pretraining mixture ---------------------

_CHAT = [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "5"}]


def test_a_chat_source_is_one_way_to_make_text(tmp_path):
    with pytest.raises(ValueError, match="messages_field"):
        Source(domain="web", path=str(tmp_path), messages_field="messages", text_template="{a}")
    _jsonl(tmp_path / "c.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])  # no assistant turn
    with pytest.raises(UserError) as exc:
        check_source("chats", Source(domain="web", path=str(tmp_path / "c.jsonl"), messages_field="messages"))
    assert exc.value.field == "sources.chats.messages_field" and "no_assistant_turn" in exc.value.problem
    with pytest.raises(UserError) as exc:
        check_source("chats", Source(domain="web", path=str(tmp_path / "c.jsonl"), messages_field="conversation"))
    assert exc.value.field == "sources.chats.messages_field" and "'conversation'" in exc.value.problem
    with pytest.raises(ValueError, match="tokenizer folder"):
        build_reader(Source(domain="web", path=str(tmp_path / "c.jsonl"), messages_field="messages"))


def test_a_chat_source_cannot_train_the_tokenizer(tiny_dict, write_recipe):
    from smolrecipe.recipe.loading import load_recipe

    tiny_dict["sources"]["chats_pretrain"] = {"domain": "web", "path": "runs/data/corpus/chats", "messages_field": "messages"}
    tiny_dict["tokenizer"]["train"]["sources"] = ["prose", "chats_pretrain"]
    with pytest.raises(UserError) as exc:
        load_recipe(write_recipe(tiny_dict))
    assert exc.value.field == "tokenizer.train.sources" and "chat source" in exc.value.problem


@pytest.mark.slow
def test_chats_are_rendered_by_the_recipe_template_and_malformed_ones_counted(tmp_path, hf_tokenizer, tiny_tokenizer):
    bad = [{"role": "narrator", "content": "x"}, {"role": "assistant", "content": "y"}]
    _jsonl(tmp_path / "c.jsonl", [{"messages": _CHAT, "id": "a", "source": "demo"}, {"messages": bad}, {"messages": _CHAT[::-1] + _CHAT}])
    reader = build_reader(Source(domain="web", path=str(tmp_path / "c.jsonl"), messages_field="messages"),
                          lost_folder=str(tmp_path / "lost"), tokenizer_folder=str(tiny_tokenizer))
    docs = list(reader(None, rank=0, world_size=1))
    assert [d.text for d in docs] == [hf_tokenizer.apply_chat_template(m, tokenize=False) for m in (_CHAT, _CHAT[::-1] + _CHAT)]
    assert docs[0].text.startswith("<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n5<|im_end|>")
    assert docs[0].id == "a" and docs[0].metadata["source"] == "demo" and "messages" not in docs[0].metadata
    assert reader.stats["lost_chat_unknown_role"].total == 1 and "lost_empty_text" not in reader.stats.stats
    assert json.loads((tmp_path / "lost" / "00000-chat_unknown_role.json").read_text())["line"] == 2
    # the template's special tokens are single tokens of the recipe's vocabulary in the prepared text
    ids = hf_tokenizer(docs[0].text, add_special_tokens=False).input_ids
    assert ids[0] == hf_tokenizer.convert_tokens_to_ids("<|im_start|>") and ids.count(hf_tokenizer.convert_tokens_to_ids("<|im_end|>")) == 2
