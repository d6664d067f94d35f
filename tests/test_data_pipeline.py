"""The data engine end to end: the tiny recipe's sources through real datatrove (local executor)
into nanoset folders that datatrove's own dataset reader and nanotron's expectations accept."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import prepare_data
import pytest
import yaml
from conftest import ROOT, tiny_recipe_at

from smolrecipe.data.pipeline import MANIFEST, WORK

pytestmark = pytest.mark.slow
SOURCES = ("prose", "forum", "arithmetic", "python_functions")


def test_every_source_becomes_a_nanoset_folder(prepared, hf_tokenizer):
    _, data = prepared
    assert len(hf_tokenizer) <= 1 << 16  # so 2-byte tokens
    for name in SOURCES:
        folder = data / "tiny" / name
        ds = sorted(folder.glob("*.ds"))
        assert ds, name
        for path in ds:  # nanotron's layout: each .ds with its .index and .metadata
            assert path.with_name(path.name + ".index").is_file()
            assert path.with_name(path.name + ".metadata").is_file()
        manifest = json.loads((folder / MANIFEST).read_text())
        assert manifest["tokens"] == sum(p.stat().st_size for p in ds) // 2  # 2-byte tokens
        assert manifest["vocab_size"] == len(hf_tokenizer)
        assert manifest["token_size"] == 2
        assert manifest["documents_kept"] > 0
        assert manifest["recipe_hash"]
        tokenizer, size = (folder / ds[0].name).with_suffix(".ds.metadata").read_text().splitlines()[0].split("|")
        # nanotron reads this line and calls AutoTokenizer.from_pretrained on the name: it must be the folder
        assert Path(tokenizer) == Path(manifest["tokenizer"]) and Path(tokenizer).is_dir() and size == "2"
    assert not (data / "tiny" / WORK / "prose").exists()  # work folders carry a fingerprint suffix


def test_dedup_removes_the_near_duplicates(prepared):
    _, data = prepared
    prose = json.loads((data / "tiny" / "prose" / MANIFEST).read_text())
    forum = json.loads((data / "tiny" / "forum" / MANIFEST).read_text())
    # the generator plants ~5% near-copies in prose; MinHash finds most of them (dedup is off for forum)
    assert 0.02 * prose["documents_read"] < prose["duplicates_removed"] < 0.08 * prose["documents_read"]
    removed_by_filters = sum(f["removed"] for f in prose["filters"])
    assert prose["documents_kept"] == prose["documents_read"] - removed_by_filters - prose["duplicates_removed"]
    assert forum["duplicates_removed"] == 0


def test_manifest_counts_each_filter_of_the_recipe(prepared):
    _, data = prepared
    prose = json.loads((data / "tiny" / "prose" / MANIFEST).read_text())
    assert [f["name"] for f in prose["filters"]] == ["gopher_quality", "gopher_repetition"]
    first, second = prose["filters"]
    assert first["in"] == prose["documents_read"] and second["in"] == first["in"] - first["removed"]
    assert sum(first["reasons"].values()) == first["removed"]


def test_folders_load_with_datatrove_and_decode_to_text(prepared, hf_tokenizer):
    from datatrove.utils.dataset import DatatroveFolderDataset

    _, data = prepared
    folder = data / "tiny" / "arithmetic"
    dataset = DatatroveFolderDataset(str(folder), seq_len=128, filename_pattern="*.ds",
                                     recursive=False, token_size=2, return_positions=True)
    assert len(dataset) > 10
    sample = dataset[0]
    assert len(sample["input_ids"]) == 129  # seq_len + 1, as nanotron's collator expects
    assert sample["positions"][0] == 0
    ids = np.concatenate([dataset[i]["input_ids"] for i in range(5)]).tolist()
    end = hf_tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert end in ids  # documents end with the recipe's document_end, not the chat eos
    assert hf_tokenizer.eos_token_id not in ids
    text = hf_tokenizer.decode(ids)
    assert any(marker in text for marker in ("Q: What is", "Solution:", " = "))  # quizzes, worked problems, drills


def test_the_chat_source_is_chatml_text_ending_each_conversation_with_the_document_end(prepared, hf_tokenizer):
    from datatrove.utils.dataset import DatatroveFolderDataset

    _, data = prepared
    dataset = DatatroveFolderDataset(str(data / "tiny" / "chats_pretrain"), seq_len=128, filename_pattern="*.ds",
                                     recursive=False, token_size=2)
    ids = np.concatenate([dataset[i]["input_ids"] for i in range(len(dataset))]).tolist()  # back-to-back windows of 129
    start, turn_end = (hf_tokenizer.convert_tokens_to_ids(t) for t in ("<|im_start|>", "<|im_end|>"))
    end = hf_tokenizer.convert_tokens_to_ids("<|endoftext|>")
    ids = ids[: len(ids) - ids[::-1].index(end)]  # whole conversations only
    # each conversation: <|im_start|> ... <|im_end|> per message, then the pretraining document end
    assert ids.count(start) == ids.count(turn_end) > 2 * ids.count(end) > 0
    first = hf_tokenizer.decode(ids[: ids.index(end) + 1])
    assert first.startswith("<|im_start|>") and "<|im_start|>assistant\n" in first and first.endswith("<|im_end|>\n<|endoftext|>")


def test_nanotron_tokenizer_check_passes(prepared, hf_tokenizer):
    """What NanosetDatasetsArgs.__post_init__ does with the metadata: load the tokenizer and count its vocabulary
    (which must be the model's)."""
    from transformers import AutoTokenizer

    from smolrecipe.recipe.loading import load_recipe

    recipe, data = prepared
    line = next((data / "tiny" / "prose").glob("*.metadata")).read_text().splitlines()[0]
    name, size = line.split("|")
    assert len(AutoTokenizer.from_pretrained(name).get_vocab()) == load_recipe(recipe).model.vocab_size and int(size) == 2


def test_metadata_names_the_tokenizer_exactly_as_the_stage_configs_do(prepared):
    """nanotron asserts config.tokenizer.tokenizer_name_or_path == the name in each folder's .metadata."""
    import yaml

    from smolrecipe.backends.nanotron.generate import render

    recipe, data = prepared
    rendered = render(recipe, resolve=True)
    for stage in ("stage1", "stage2", "stage3"):
        config = yaml.safe_load(rendered.files[f"{stage}.yaml"])
        for ds in config["data_stages"]:
            for folder in ds["data"]["dataset"]["dataset_folder"]:
                name = next(Path(folder).glob("*.metadata")).read_text().splitlines()[0].split("|")[0]
                assert name == config["tokenizer"]["tokenizer_name_or_path"]


def test_rerun_is_a_no_op(prepared, capsys):
    recipe, data = prepared
    outputs = [*(data / "tiny").rglob("*.ds"), data / "tiny" / "sft" / "train.parquet",
               *(data / "tiny" / "preference").glob("*.parquet")]
    before = {p: p.stat().st_mtime_ns for p in outputs}
    capsys.readouterr()
    assert prepare_data.main([str(recipe)]) == 0 and prepare_data.main([str(recipe), "--sft"]) == 0
    # every source (the needle source also for its generated documents) + the tokenizer twice + the two
    # stages' own datasets (sft, preference)
    sources = yaml.safe_load(recipe.read_text())["sources"]
    assert capsys.readouterr().out.count("up to date") == len(sources) + 1 + 4
    assert {p: p.stat().st_mtime_ns for p in outputs} == before


def test_chats_edited_in_place_are_prepared_again(prepared, tmp_path, capsys):
    """The SFT records are fingerprinted on the chat files' bytes, not only on their path: chats
    regenerated in place (a new corpus version) must not leave the old records "up to date"."""
    recipe, data = prepared
    chats = tmp_path / "chats"
    shutil.copytree(data / "corpus" / "chats", chats)
    spec = yaml.safe_load(recipe.read_text())
    stage = next(s for s in spec["stages"] if s["kind"] == "sft")
    stage["data"]["path"] = str(chats)
    spec["stages"] = [s for s in spec["stages"] if s["kind"] != "preference"]
    copy = tmp_path / "tiny.yaml"
    copy.write_text(yaml.safe_dump(spec, sort_keys=False))
    folder = data / "tiny" / "sft"
    assert prepare_data.main([str(copy), "--sft"]) == 0
    built = json.loads((folder / "manifest.json").read_text())
    capsys.readouterr()
    assert prepare_data.main([str(copy), "--sft"]) == 0 and "sft: up to date" in capsys.readouterr().out
    first = sorted(chats.glob("*.jsonl"))[0]
    lines = first.read_text().splitlines()
    first.write_text("\n".join(lines[: len(lines) // 2]) + "\n")
    assert prepare_data.main([str(copy), "--sft"]) == 0 and "sft: up to date" not in capsys.readouterr().out
    rebuilt = json.loads((folder / "manifest.json").read_text())
    assert rebuilt["fingerprint"] != built["fingerprint"] and rebuilt["conversations"] < built["conversations"]
    assert prepare_data.main([str(recipe), "--sft"]) == 0  # the shared fixture's records, as they were


def test_a_recipe_without_an_sft_stage_prepares_with_all_and_refuses_sft(prepared, tmp_path, capsys):
    """--all prepares the sources and then every stage's own data, of which there may be none;
    --sft alone asks for stage data and says so when there is none."""
    import yaml

    recipe, _ = prepared
    data = yaml.safe_load(recipe.read_text())
    data["stages"] = [s for s in data["stages"] if s["kind"] == "pretrain"]
    pretraining_only = tmp_path / "pretraining.yaml"
    pretraining_only.write_text(yaml.safe_dump(data, sort_keys=False))
    assert prepare_data.main([str(pretraining_only), "--all"]) == 0
    capsys.readouterr()
    assert prepare_data.main([str(pretraining_only), "--sft"]) == 2
    assert "has a dataset of its own" in capsys.readouterr().err


def test_sft_dataset_loads_by_path(prepared):
    from datasets import load_dataset

    _, data = prepared
    folder = data / "tiny" / "sft"
    records = load_dataset(str(folder), split="train")  # what nanotron's SFTDatasetsArgs does with a path
    assert records.column_names == ["prompt", "completion"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert len(records) == manifest["records"] > 0
    assert manifest["kept"] + sum(manifest["dropped"].values()) == manifest["conversations"]
    first = records[0]
    assert first["prompt"].endswith("<|im_start|>assistant\n") and "<|im_end|>" not in first["completion"]


def test_preflight_reads_the_manifests(prepared, capsys):
    import make_config

    recipe, data = prepared
    assert make_config.main([str(recipe), "--out", str(data / "configs"), "--resolve"]) == 0
    out = capsys.readouterr().out
    assert "tokens needed vs prepared" in out and "not prepared" not in out


def test_preflight_warns_when_a_source_is_read_too_often(prepared, tmp_path, capsys):
    import make_config
    import yaml

    recipe, _ = prepared
    data = yaml.safe_load(recipe.read_text())
    data["max_epochs"] = 0.05  # the tiny stages read far more than 5% of any source
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    assert make_config.main([str(path), "--out", str(tmp_path / "c"), "--resolve", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "warning: prose: read" in out and "above max_epochs 0.05" in out


# ---------------------------------------------------------------------------------------------
# Resilience: kill midway, rerun, same result

def _run_cli(recipe: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "tools" / "prepare_data.py"), str(recipe), "--workers", "1",
                             "--tasks", "2", *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _nanoset_bytes(data: Path) -> dict[str, bytes]:
    # Everything but .metadata, whose first line holds the (different) absolute tokenizer path.
    return {str(p.relative_to(data)): p.read_bytes() for p in sorted((data / "tiny").glob("*/*.ds*"))
            if not p.name.endswith(".metadata")}


def test_killed_run_resumes_to_the_same_result(demo_corpus, tiny_tokenizer, tmp_path):
    runs = {}
    for label in ("uninterrupted", "interrupted"):
        data = tmp_path / label
        shutil.copytree(demo_corpus / "corpus", data / "corpus")
        recipe = tiny_recipe_at(data, tiny_tokenizer, data / "tiny.yaml")
        if label == "interrupted":
            proc = _run_cli(recipe)
            marker = None
            deadline = time.time() + 120
            while marker is None and proc.poll() is None and time.time() < deadline:
                marker = next(iter((data / "tiny").glob(f"{WORK}/*/logs/*/completions/*")), None)
                time.sleep(0.01)
            assert proc.poll() is None, "the run ended before it could be interrupted"
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            published = [n for n in SOURCES if (data / "tiny" / n / MANIFEST).exists()]
            assert len(published) < len(SOURCES)
            # nothing half-written: a source folder exists only with its manifest
            assert all((data / "tiny" / n / MANIFEST).exists() for n in SOURCES if (data / "tiny" / n).exists())
        assert _run_cli(recipe).wait(timeout=600) == 0
        runs[label] = data
    a, b = (_nanoset_bytes(runs[k]) for k in ("uninterrupted", "interrupted"))
    assert a.keys() == b.keys() and len(a) >= 3 * len(SOURCES)
    assert all(a[k] == b[k] for k in a)
    for name in SOURCES:
        ma, mb = (json.loads((runs[k] / "tiny" / name / MANIFEST).read_text()) for k in ("uninterrupted", "interrupted"))
        assert (ma["tokens"], ma["documents_kept"], ma["duplicates_removed"]) == (mb["tokens"], mb["documents_kept"],
                                                                                  mb["duplicates_removed"])
