"""Prepared data is checked against its manifests by every consumer before it starts, and the model's
vocabulary against the tokenizer folder on every run (smolrecipe.data.verify).

The fast tests write nanoset folders in datatrove's layout by hand (.ds of uint16 tokens, .index of
uint64 document ends, .metadata `tokenizer|token_size` + token count, manifest.json); the slow one
holds the checks to what the real pipeline writes."""

import json
import re
import shutil
from pathlib import Path

import make_config
import numpy as np
import pytest
import run_stage
import yaml
from conftest import base_tokenizer, recipe_variant, tiny_recipe_at

from smolrecipe.data.tokenizer import tokenizer_entries
from smolrecipe.data.verify import verify_prepared, verify_source_folder, verify_stage_data
from smolrecipe.errors import UserError
from smolrecipe.recipe.envpaths import resolve_recipe
from smolrecipe.recipe.loading import load_recipe
from smolrecipe.recipe.plan import build_plan

SOURCES = ("prose", "forum", "arithmetic", "python_functions", "chats_pretrain", "prose_long", "needles")
FILES = ("00000_doc.ds", "00001_doc.ds")
TOKENS_PER_FILE = 4000
DOCUMENT = 100  # tokens


def write_nanoset(folder: Path, tokenizer: str, seed: int) -> None:
    """A nanoset folder as tools/prepare_data.py publishes it with the tokenizer folder `tokenizer`
    (two files, 2-byte tokens)."""
    folder.mkdir(parents=True)
    vocab_size = tokenizer_entries(tokenizer)
    assert vocab_size <= 1 << 16  # 2-byte tokens
    rng = np.random.default_rng(seed)
    files = []
    for name in FILES:
        tokens = rng.integers(0, vocab_size, TOKENS_PER_FILE, dtype=np.uint16)
        (folder / name).write_bytes(tokens.tobytes())
        ends = np.arange(DOCUMENT, TOKENS_PER_FILE + 1, DOCUMENT, dtype=np.uint64)
        (folder / f"{name}.index").write_bytes(ends.astype("<u8").tobytes())
        (folder / f"{name}.metadata").write_text(f"{tokenizer}|2\n{TOKENS_PER_FILE}\n4.0 kT")
        files.append({"name": name, "bytes": TOKENS_PER_FILE * 2})
    manifest = {"source": folder.name, "fingerprint": "f" * 12, "tokenizer": tokenizer, "token_size": 2,
                "tokens": TOKENS_PER_FILE * len(FILES), "files": files, "vocab_size": vocab_size}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def write_sft(folder: Path, tokenizer: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    rows = [{"prompt": f"<|im_start|>user\n{i} + {i}?<|im_end|>\n<|im_start|>assistant\n", "completion": str(2 * i)}
            for i in range(20)]
    pq.write_table(pa.Table.from_pylist(rows), folder / "train.parquet")
    (folder / "manifest.json").write_text(json.dumps({"tokenizer": tokenizer, "records": len(rows), "file": "train.parquet"}))


def write_pairs(folder: Path, tokenizer: str) -> None:
    """A preference stage's folder, written by the real writer."""
    from smolrecipe.data.preferences import write_preference_dataset
    from smolrecipe.data.tokenizer import load_tokenizer
    from smolrecipe.recipe.schema import PreferenceData

    pairs = [{"prompt": f"{i} + {i}?", "chosen": str(2 * i), "rejected": str(2 * i + 1)} for i in range(20)]
    write_preference_dataset(pairs, PreferenceData(path="pairs", heldout_fraction=0.2), load_tokenizer(tokenizer), 128,
                             folder, {"tokenizer": tokenizer}, progress=False)


@pytest.fixture
def nanosets(tmp_path, tiny_tokenizer):
    """(recipe path, data root): the tiny recipe under tmp_path with every folder it reads prepared."""
    recipe = tiny_recipe_at(tmp_path, tiny_tokenizer, tmp_path / "tiny.yaml")
    for seed, source in enumerate(SOURCES):
        write_nanoset(tmp_path / "tiny" / source, str(tiny_tokenizer), seed)
    write_sft(tmp_path / "tiny" / "sft", str(tiny_tokenizer))
    write_pairs(tmp_path / "tiny" / "preference", str(tiny_tokenizer))
    return recipe, tmp_path


def resolved(recipe_path: Path):
    recipe = resolve_recipe(load_recipe(recipe_path))
    return recipe, build_plan(recipe)


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def make_config_error(recipe: Path, out: Path, capsys) -> str:
    assert make_config.main([str(recipe), "--out", str(out), "--resolve", "--quiet"]) == 2
    assert not out.exists()  # checked before anything is written
    return error_line(capsys)


def with_vocab(recipe: Path, vocab_size: int) -> Path:
    """The recipe with another model.vocab_size (and tokenizer.train.vocab_size, which must agree: the
    tokenizer folder is not built again)."""
    data = yaml.safe_load(recipe.read_text())
    data["model"]["vocab_size"] = vocab_size
    if "train" in data["tokenizer"]:
        data["tokenizer"]["train"]["vocab_size"] = vocab_size
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    return recipe


# ---------------------------------------------------------------------------------------------
# Good folders pass

def assert_every_stage_passes(recipe_path):
    """The preflight's check and each stage's (nanotron's, the strictest) pass."""
    recipe, plan = resolved(recipe_path)
    assert verify_prepared(plan) == []
    for stage in plan.stages:
        verify_stage_data(recipe, stage, exact_tokenizer=True)


def test_prepared_folders_pass_every_consumer_check(nanosets, tmp_path, capsys):
    recipe_path, _ = nanosets
    assert_every_stage_passes(recipe_path)
    assert make_config.main([str(recipe_path), "--out", str(tmp_path / "configs"), "--resolve", "--quiet"]) == 0
    assert "error" not in capsys.readouterr().err


def test_a_folder_not_prepared_yet_is_a_warning_in_the_preflight_and_an_error_for_training(nanosets, tmp_path, capsys):
    recipe_path, data = nanosets
    shutil.rmtree(data / "tiny" / "forum")
    recipe, plan = resolved(recipe_path)
    assert verify_prepared(plan) == [str(data / "tiny" / "forum")]
    assert make_config.main([str(recipe_path), "--out", str(tmp_path / "configs"), "--resolve", "--quiet"]) == 0
    assert "warning: forum: not prepared yet" in capsys.readouterr().out
    with pytest.raises(UserError, match=r"sources.forum: .*/tiny/forum is not prepared \(no manifest.json\); fix: run "
                                        r"python tools/prepare_data.py RECIPE --source forum"):
        verify_stage_data(recipe, plan.stage("stage1"))


# ---------------------------------------------------------------------------------------------
# A folder changed after preparation: every consumer refuses it with one line

def truncate(path: Path, keep: int) -> None:
    with path.open("r+b") as f:
        f.truncate(keep)


def test_a_truncated_ds_stops_the_preflight_with_one_line_naming_the_folder(nanosets, tmp_path, capsys):
    recipe_path, data = nanosets
    folder = data / "tiny" / "prose"
    truncate(folder / FILES[1], 5000)
    line = make_config_error(recipe_path, tmp_path / "configs", capsys)
    assert line == (f"error: {recipe_path}: sources.prose: {folder / FILES[1]} has 5,000 bytes, its manifest says 8,000 "
                    f"(cut short or changed after preparation); fix: run python tools/prepare_data.py {recipe_path} "
                    "--source prose again")


def test_a_truncated_ds_stops_both_backends_before_they_start(nanosets, tmp_path, capsys):
    recipe_path, data = nanosets
    folder = data / "tiny" / "arithmetic"
    truncate(folder / FILES[0], 7998)  # one whole token short: the index then disagrees too

    assert run_stage.main([str(recipe_path), "stage2", "--backend", "nanotron", "--gpus", "1", "--dry-run"]) == 2
    line = error_line(capsys)
    assert f"sources.arithmetic: {folder / FILES[0]} has 7,998 bytes, its manifest says 8,000" in line
    assert f"fix: run python tools/prepare_data.py {recipe_path} --source arithmetic again" in line
    recipe, plan = resolved(recipe_path)
    assert not (Path(plan.stage("stage2").checkpoints_path).parent / "config.yaml").exists()  # no config written

    assert run_stage.main([str(recipe_path), "stage2", "--backend", "local", "--dry-run"]) == 2
    assert f"sources.arithmetic: {folder / FILES[0]} has 7,998 bytes" in error_line(capsys)

    # a stage that does not read the folder is not held up by it
    assert run_stage.main([str(recipe_path), "stage1", "--backend", "nanotron", "--gpus", "1", "--dry-run"]) == 0


def test_train_local_refuses_a_truncated_folder_before_writing_anything(nanosets):
    from smolrecipe import runs
    from smolrecipe.backends.local.train import run_stage as train

    recipe_path, data = nanosets
    truncate(data / "tiny" / "forum" / FILES[1], 100)
    recipe, plan = resolved(recipe_path)
    with pytest.raises(UserError, match="sources.forum: .* has 100 bytes, its manifest says 8,000"):
        train(recipe, plan, "stage1", max_steps=1)
    assert not runs.local_dir(recipe, "stage1").exists()


CHANGES = {
    "ds missing": (lambda f: (f / FILES[0]).unlink(), f"{FILES[0]} is missing (the manifest lists 2 .ds files)"),
    "index missing": (lambda f: (f / f"{FILES[1]}.index").unlink(), f"{FILES[1]}.index is missing"),
    "metadata missing": (lambda f: (f / f"{FILES[1]}.metadata").unlink(), f"{FILES[1]}.metadata is missing"),
    "index cut short": (lambda f: truncate(f / f"{FILES[0]}.index", 8 * 39),
                        f"{FILES[0]}.index ends its last document at token 3,900, {FILES[0]} holds 4,000 tokens"),
    "metadata count": (lambda f: _edit_metadata(f / f"{FILES[0]}.metadata", count="3999"),
                       f"{FILES[0]}.metadata counts 3999 tokens, {FILES[0]} holds 4,000"),
    "extra ds": (lambda f: (f / "99999_stray.ds").write_bytes(b"\0\0"), "99999_stray.ds is not in the folder's manifest"),
    "manifest tokens": (lambda f: _edit_manifest(f, tokens=9000), "its .ds files hold 8,000 tokens (2-byte), its manifest says 9,000"),
    "manifest unreadable": (lambda f: (f / "manifest.json").write_text("{"), "manifest.json is unreadable"),
}


def _edit_metadata(path: Path, count: str) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], count, *lines[2:]]))


def _edit_manifest(folder: Path, **changes) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(changes)
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("change", CHANGES, ids=list(CHANGES))
def test_each_way_a_folder_disagrees_with_its_manifest_is_one_line(nanosets, change):
    recipe_path, data = nanosets
    folder = data / "tiny" / "forum"
    edit, expected = CHANGES[change]
    edit(folder)
    recipe, plan = resolved(recipe_path)
    with pytest.raises(UserError) as err:
        verify_prepared(plan, str(recipe_path))
    line = err.value.line()
    assert "\n" not in line and line.startswith("sources.forum: ") and str(folder) in line and expected in line, line
    assert line.endswith(f"python tools/prepare_data.py {recipe_path} --source forum again"), line


def test_a_folder_of_another_tokenizer_or_vocabulary_is_refused(nanosets, tmp_path, tiny_tokenizer):
    recipe_path, data = nanosets
    folder = data / "tiny" / "prose"
    _edit_manifest(folder, tokenizer="/elsewhere/llama3")
    with pytest.raises(UserError, match=r"prose was tokenized with /elsewhere/llama3, the recipe's tokenizer is "
                                        rf"{re.escape(str(tiny_tokenizer))}; fix: set tokenizer.path back to /elsewhere/llama3, "
                                        r"or run python tools/prepare_data.py"):
        verify_source_folder(folder, "prose", str(tiny_tokenizer))

    spelled = f"{tiny_tokenizer.parent}/./{tiny_tokenizer.name}"  # the same folder, written differently
    for name in FILES:
        (folder / f"{name}.metadata").write_text(f"{spelled}|2\n{TOKENS_PER_FILE}\n")
    _edit_manifest(folder, tokenizer=spelled)
    verify_source_folder(folder, "prose", str(tiny_tokenizer))  # the local backend reads it the same
    with pytest.raises(UserError, match="nanotron asserts the two strings are equal"):
        verify_source_folder(folder, "prose", str(tiny_tokenizer), exact_tokenizer=True)

    vocab_size = load_recipe(recipe_path).model.vocab_size
    other = vocab_size + 1000  # another tokenizer's, still 2-byte
    _edit_manifest(folder, tokenizer=str(tiny_tokenizer), vocab_size=other)
    for name in FILES:
        (folder / f"{name}.metadata").write_text(f"{tiny_tokenizer}|2\n{TOKENS_PER_FILE}\n")
    with pytest.raises(UserError, match=rf"tokenized with a vocabulary of {other:,} entries, model.vocab_size is {vocab_size:,}; "
                                        rf"fix: set model.vocab_size: {other}, or run python tools/prepare_data.py"):
        verify_source_folder(folder, "prose", str(tiny_tokenizer), vocab_size)
    _edit_manifest(folder, vocab_size=None)  # a manifest from before vocab_size was recorded
    with pytest.raises(UserError, match=r"stores 2-byte tokens, a vocabulary of 128,256 \(model.vocab_size\) is stored in 4-byte"):
        verify_source_folder(folder, "prose", str(tiny_tokenizer), 128256)


def test_a_truncated_sft_dataset_is_refused(nanosets, tmp_path, capsys):
    recipe_path, data = nanosets
    parquet = data / "tiny" / "sft" / "train.parquet"
    truncate(parquet, parquet.stat().st_size // 2)
    line = make_config_error(recipe_path, tmp_path / "configs", capsys)
    assert line == (f"error: {recipe_path}: sft.data: {parquet} is not a readable Parquet file (cut short or changed after "
                    f"preparation); fix: delete {parquet.parent} and run python tools/prepare_data.py {recipe_path} --sft again")
    recipe, plan = resolved(recipe_path)
    verify_stage_data(recipe, plan.stage("stage1"))  # the pretraining stages do not read it
    with pytest.raises(UserError, match="sft.data: .* is not a readable Parquet file"):
        verify_stage_data(recipe, plan.stage("sft"))


# ---------------------------------------------------------------------------------------------
# The model's vocabulary against the tokenizer folder, on every run

def test_a_vocabulary_changed_after_the_tokenizer_was_built_stops_every_consumer(nanosets, tmp_path, tiny_tokenizer, capsys):
    from smolrecipe.backends.local.train import run_stage as train
    from smolrecipe.data.tokenizer import build_tokenizer

    recipe_path, _ = nanosets
    entries = tokenizer_entries(tiny_tokenizer)
    smaller, larger = entries // 2, entries * 2
    with_vocab(recipe_path, smaller)
    expected = (f"model.vocab_size: {smaller:,} but the tokenizer folder {tiny_tokenizer} has {entries:,} entries (token ids "
                f"up to {entries - 1:,} would index past the model's embedding table); fix: set model.vocab_size: {entries}")

    assert make_config_error(recipe_path, tmp_path / "configs", capsys) == f"error: {recipe_path}: {expected}"
    for backend in ("nanotron", "local"):
        assert run_stage.main([str(recipe_path), "stage2", "--backend", backend, "--gpus", "1", "--dry-run"]) == 2
        assert error_line(capsys) == f"error: {recipe_path}: {expected}"
    recipe, plan = resolved(recipe_path)
    with pytest.raises(UserError, match=rf"model.vocab_size: {smaller:,} but the tokenizer folder"):
        train(recipe, plan, "stage1", max_steps=1)

    with_vocab(recipe_path, larger)
    assert f"(nanotron asserts they are equal); fix: set model.vocab_size: {entries}" in make_config_error(
        recipe_path, tmp_path / "configs", capsys)

    # prepare_data's tokenizer step: a trained folder is trained again when its vocab_size changes (it is part
    # of the folder's fingerprint); a `base` folder is up to date whatever model.vocab_size says, and is checked
    data = base_tokenizer(yaml.safe_load(recipe_path.read_text()), tiny_tokenizer, tmp_path / "from-base")
    data["model"]["vocab_size"] = entries
    recipe_path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert build_tokenizer(resolve_recipe(load_recipe(recipe_path)))[1]
    with_vocab(recipe_path, smaller)
    with pytest.raises(UserError, match=rf"model.vocab_size: {smaller:,} but the tokenizer folder .*/from-base has {entries:,}"):
        build_tokenizer(resolve_recipe(load_recipe(recipe_path)))  # the folder is up to date, the model is not


def test_a_tokenizer_folder_not_built_yet_is_left_to_the_preflight_and_required_for_training(tmp_path, capsys):
    recipe_path = tiny_recipe_at(tmp_path, tmp_path / "no-tokenizer", tmp_path / "tiny.yaml")
    assert make_config.main([str(recipe_path), "--out", str(tmp_path / "configs"), "--resolve", "--quiet"]) == 0
    capsys.readouterr()
    assert run_stage.main([str(recipe_path), "stage1", "--backend", "local", "--dry-run"]) == 2
    assert error_line(capsys) == (f"error: {recipe_path}: tokenizer.path: {tmp_path / 'no-tokenizer'} does not exist; "
                                  f"fix: build it: python tools/prepare_data.py {recipe_path} --build-tokenizer")


# ---------------------------------------------------------------------------------------------
# What the real pipeline writes

@pytest.mark.slow
def test_the_pipelines_folders_pass_and_a_truncated_copy_does_not(prepared, tmp_path, capsys):
    recipe_path, data = prepared
    assert_every_stage_passes(recipe_path)

    copy = tmp_path / "data"
    shutil.copytree(data / "tiny", copy / "tiny", ignore=shutil.ignore_patterns(".work"))
    variant = recipe_variant(recipe_path, tmp_path / "tiny.yaml", lambda d: d["paths"].update(data=str(copy)))
    ds = sorted((copy / "tiny" / "prose").glob("*.ds"))[0]
    truncate(ds, ds.stat().st_size // 2)
    assert run_stage.main([str(variant), "stage1", "--backend", "nanotron", "--gpus", "1", "--dry-run"]) == 2
    line = error_line(capsys)
    assert f"sources.prose: {ds} has {ds.stat().st_size:,} bytes, its manifest says" in line
    assert make_config.main([str(variant), "--out", str(tmp_path / "configs"), "--resolve", "--quiet"]) == 2
    assert f"sources.prose: {ds} has" in error_line(capsys)
