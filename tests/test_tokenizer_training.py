"""A recipe that trains its own byte-level BPE tokenizer (`tokenizer.train`): deterministic, the
vocabulary the model expects, ChatML's special tokens at fixed ids, digits one per token, a folder
reused until its inputs change, and one that every consumer (datatrove, transformers) loads."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import prepare_data
import pytest
import yaml
from conftest import tiny_recipe_at

from smolrecipe.data.tokenizer import build_tokenizer, check_vocabulary, tokenizer_entries
from smolrecipe.errors import UserError
from smolrecipe.recipe.loading import load_recipe

VOCAB = 1024
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is 12 + 30?"},
        {"role": "assistant", "content": "12 + 30 = 42."}]


def train_block(**changes) -> dict:
    """The tiny recipe's tokenizer section at a smaller vocabulary, reading at most 30k characters per source."""
    return {"train": {"vocab_size": VOCAB, "max_characters": 30_000, **changes}, "path": "runs/data/tokenizers/tiny",
            "chat_template": "tokenizer/chatml.jinja", "bos_token_id": 1, "eos_token_id": 2, "document_end": "<|endoftext|>"}


def trained_recipe(data: Path, name: str = "recipe.yaml", folder: str = "tokenizer", **changes) -> Path:
    """The tiny recipe on the demo corpus under `data`, training its tokenizer into data/<folder>."""
    from demo.corpus import write_demo_corpus

    write_demo_corpus(data / "corpus", seed=0, scale=0.05, shards=2)  # ~120k characters; kept when already there
    path = tiny_recipe_at(data, data / folder, data / name)
    recipe = yaml.safe_load(path.read_text())
    recipe["tokenizer"] = {**train_block(**changes), "path": str(data / folder)}
    recipe["model"]["vocab_size"] = recipe["tokenizer"]["train"]["vocab_size"]
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(recipe, tokenizer folder), trained once for the tests that only read it."""
    data = tmp_path_factory.mktemp("trained")
    recipe = trained_recipe(data)
    folder, built = build_tokenizer(load_recipe(recipe))
    assert built
    return recipe, folder


@pytest.fixture(scope="module")
def hf(trained):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(trained[1]))


def test_training_twice_writes_identical_folders(trained):
    recipe, folder = trained
    again, built = build_tokenizer(load_recipe(trained_recipe(recipe.parent, "again.yaml", folder="again")))
    assert built
    files = sorted(p.name for p in folder.iterdir())
    assert "tokenizer.json" in files and files == sorted(p.name for p in again.iterdir())
    for name in files:  # tokenizer.json byte for byte, and the config, template and provenance too
        assert (folder / name).read_bytes() == (again / name).read_bytes(), name


def test_the_vocabulary_has_exactly_vocab_size_entries(trained, hf):
    recipe, folder = trained
    assert len(hf) == VOCAB and tokenizer_entries(folder) == VOCAB
    assert check_vocabulary(load_recipe(recipe)) == VOCAB
    assert hf.convert_ids_to_tokens([0, 1, 2]) == SPECIAL  # the special tokens first, in the listed order
    assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token) == (1, 2, "<|endoftext|>")


def test_the_chat_templates_special_tokens_round_trip(hf):
    text = hf.apply_chat_template(CHAT, tokenize=False)
    ids = hf(text, add_special_tokens=False)["input_ids"]
    tokens = hf.convert_ids_to_tokens(ids)
    for id_, token in ((1, "<|im_start|>"), (2, "<|im_end|>")):
        assert text.count(token) == len(CHAT) == ids.count(id_)  # each one a single id, at its fixed id
        assert [t for t in tokens if t == token] == [token] * len(CHAT)
    assert not any(t != s and s in t for t in tokens for s in SPECIAL)  # never merged into a longer token
    assert hf.decode(ids) == text


def test_digits_are_one_token_each(hf):
    ids = hf("In 2024, 12345 + 678 = 13023.", add_special_tokens=False)["input_ids"]
    pieces = [hf.decode([i]) for i in ids]
    assert [p for p in pieces if any(c.isdigit() for c in p)] == list("2024" "12345" "678" "13023")


def test_the_folder_loads_offline_as_nanotron_loads_it(trained, tmp_path):
    code = ("import sys; from transformers import AutoTokenizer; t = AutoTokenizer.from_pretrained(sys.argv[1]); "
            "print(len(t), t.bos_token_id, t.eos_token_id, t.chat_template is not None)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty-hf-home")}
    out = subprocess.run([sys.executable, "-c", code, str(trained[1])], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(VOCAB), "1", "2", "True"]


def test_the_summary_line_gives_the_numbers(tmp_path, capsys):
    build_tokenizer(load_recipe(trained_recipe(tmp_path, sources=["prose", "arithmetic"])))
    line = capsys.readouterr().out.strip()
    # prose stops at max_characters; arithmetic, smaller than that, is read whole
    arithmetic = sum(len(json.loads(record)["text"]) for file in sorted((tmp_path / "corpus" / "arithmetic").glob("*.jsonl"))
                     for record in file.read_text().splitlines())
    assert arithmetic < 30_000
    assert line.startswith(f"tokenizer: trained a 1,024-entry byte-level BPE on 2 source(s) (prose 30,000, arithmetic {arithmetic:,};")
    assert f"{30_000 + arithmetic:,} characters) in " in line and "\n" not in line


def test_an_up_to_date_folder_is_reused_and_a_changed_input_rebuilds_it(tmp_path):
    recipe = trained_recipe(tmp_path)
    corpus = tmp_path / "corpus"
    assert build_tokenizer(load_recipe(recipe))[1]
    provenance = json.loads((tmp_path / "tokenizer" / "smolrecipe_tokenizer.json").read_text())
    assert provenance["sources"]["prose"]["files"] == 2 and provenance["sources"]["forum"]["files"] is None
    assert not build_tokenizer(load_recipe(recipe))[1]

    # prose stopped at 30,000 characters in its 2nd file: a 3rd one would not be read
    (corpus / "prose" / "00002.jsonl").write_text(json.dumps({"text": "a later file " * 50}) + "\n")
    assert not build_tokenizer(load_recipe(recipe))[1]
    # forum was read to its end: a new file is new text
    (corpus / "forum" / "00002.jsonl").write_text(json.dumps({"text": "a new thread " * 50}) + "\n")
    assert build_tokenizer(load_recipe(recipe))[1]
    assert not build_tokenizer(load_recipe(recipe))[1]
    # a file that was read, changed
    with open(corpus / "arithmetic" / "00000.jsonl", "a") as fh:
        fh.write(json.dumps({"text": "Problem: 1 + 1?\nSolution: 2."}) + "\n")
    assert build_tokenizer(load_recipe(recipe))[1]
    # a setting of the training
    data = yaml.safe_load(recipe.read_text())
    data["tokenizer"]["train"]["min_frequency"] = 3
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    assert build_tokenizer(load_recipe(recipe))[1]
    assert not build_tokenizer(load_recipe(recipe))[1]


def _vocab_mismatch(d):
    d["model"]["vocab_size"] = 49152


def _unknown_source(d):
    d["tokenizer"]["train"]["sources"] = ["prose", "wiki"]


def _bos_not_special(d):
    d["tokenizer"]["bos_token_id"] = 3


def _vocab_too_small(d):
    d["tokenizer"]["train"]["vocab_size"] = d["model"]["vocab_size"] = 259


def _both_origins(d):
    d["tokenizer"]["base"] = "HuggingFaceTB/SmolLM2-135M-Instruct"


def _no_origin(d):
    del d["tokenizer"]["train"]


def _document_end_not_special(d):
    d["tokenizer"]["document_end"] = "</s>"


def _revision_without_base(d):
    d["tokenizer"]["revision"] = "main"


def _repeated_special_token(d):
    d["tokenizer"]["train"]["special_tokens"] = ["<|endoftext|>", "<|im_start|>", "<|im_start|>"]


@pytest.mark.parametrize("edit, field, words", [
    (_vocab_mismatch, "model.vocab_size", "set model.vocab_size: 1024"),
    (_unknown_source, "tokenizer.train.sources", "unknown source 'wiki'"),
    (_bos_not_special, "tokenizer.bos_token_id", "0 = <|endoftext|>, 1 = <|im_start|>, 2 = <|im_end|>"),
    (_vocab_too_small, "tokenizer.train.vocab_size", "take 259"),
    (_both_origins, "tokenizer.train", "exactly one of `base`"),
    (_no_origin, "tokenizer.base", "exactly one of `base`"),
    (_document_end_not_special, "tokenizer.document_end", "'</s>' is not one of"),
    (_revision_without_base, "tokenizer.revision", "remove it"),
    (_repeated_special_token, "tokenizer.train.special_tokens", "listed twice"),
])
def test_bad_training_settings_are_one_line_errors(tiny_dict, write_recipe, edit, field, words):
    tiny_dict["tokenizer"] = train_block()
    tiny_dict["model"]["vocab_size"] = VOCAB
    edit(tiny_dict)
    with pytest.raises(UserError) as exc:
        load_recipe(write_recipe(tiny_dict))
    assert exc.value.field == field and words in exc.value.line() and exc.value.fix
    assert "\n" not in exc.value.line()


def test_a_corpus_too_small_for_the_vocabulary_fails_and_writes_nothing(tmp_path):
    recipe = trained_recipe(tmp_path, vocab_size=30_000)
    with pytest.raises(UserError) as exc:
        build_tokenizer(load_recipe(recipe))
    assert exc.value.field == "tokenizer.train.vocab_size" and "training stopped at" in exc.value.problem
    reached = int(exc.value.fix.split("to ")[1].split(",")[0])
    assert 256 + 3 < reached < 30_000 and not (tmp_path / "tokenizer").exists()


def test_an_unreadable_training_source_stops_before_training(tmp_path):
    recipe = trained_recipe(tmp_path)
    data = yaml.safe_load(recipe.read_text())
    data["sources"]["forum"]["path"] = str(tmp_path / "nowhere")
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(UserError) as exc:
        build_tokenizer(load_recipe(recipe))
    assert exc.value.field == "sources.forum.path" and not (tmp_path / "tokenizer").exists()


@pytest.mark.slow
def test_the_pipeline_tokenizes_with_a_trained_tokenizer(tmp_path, capsys):
    """prepare_data trains the tokenizer first, then datatrove tokenizes every source with it and
    the SFT records are rendered with its template."""
    from datatrove.utils.dataset import DatatroveFolderDataset
    from transformers import AutoTokenizer

    recipe = trained_recipe(tmp_path)
    assert prepare_data.main([str(recipe), "--all", "--workers", "1"]) == 0
    assert "tokenizer: trained a 1,024-entry byte-level BPE on 4 source(s)" in capsys.readouterr().out
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "tokenizer"))
    folder = tmp_path / "tiny" / "arithmetic"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["tokens"] > 0 and manifest["token_size"] == 2 and Path(manifest["tokenizer"]) == tmp_path / "tokenizer"
    dataset = DatatroveFolderDataset(str(folder), seq_len=128, filename_pattern="*.ds", recursive=False, token_size=2)
    ids = np.concatenate([dataset[i]["input_ids"] for i in range(len(dataset))]).tolist()
    assert max(ids) < VOCAB and 0 in ids and 2 not in ids  # documents end with <|endoftext|> (id 0), not the eos
    assert "Solution:" in tokenizer.decode(ids)
    sft = json.loads((tmp_path / "tiny" / "sft" / "manifest.json").read_text())
    assert sft["records"] > 0
