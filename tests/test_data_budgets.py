"""Token budgets: what the plan draws from each source becomes what is prepared, read no further.

The cap runs on local data many times larger than its budget; hub streaming is exercised on a local
folder of JSONL files opened through `datasets` (the same IterableDataset and shard split as a hub
set, without a hub)."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import prepare_data
import pytest
import yaml
from conftest import ROOT, base_tokenizer, tiny_recipe_at

from smolrecipe.data.pipeline import read_manifest
from smolrecipe.errors import UserError
from smolrecipe.recipe.budgets import BUDGET_MARGIN, CAP_TOLERANCE, round_up, source_budgets
from smolrecipe.recipe.envpaths import resolve_recipe
from smolrecipe.recipe.loading import load_recipe
from smolrecipe.recipe.plan import build_plan

WORDS = ("the river town keeps a market by the old bridge where traders sell salt fish grain and wool "
         "every spring the council counts the boats and writes the numbers in a long book").split()


def _documents(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 120))) + "."} for _ in range(n)]


def _corpus(folder, files: int = 4, per_file: int = 800) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (folder / f"{i:05d}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in _documents(per_file, i)))


def _recipe(tmp_path, tokenizer, budget: int | None = 30_000, hub: bool = False, **source) -> str:
    """The tiny recipe reading one big source `big` (~4 files x 800 documents, ~300k tokens), with the
    session's trained tokenizer as its base (copied under tmp_path: too few words in `big` to train one)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tiny_recipe_at(tmp_path, tokenizer, tmp_path / "recipe.yaml")
    data = base_tokenizer(yaml.safe_load(path.read_text()), tokenizer, tmp_path / "tokenizer")
    _corpus(tmp_path / "big")
    origin = {"hf": str(tmp_path / "big")} if hub else {"path": str(tmp_path / "big")}
    data["sources"] = {"big": {"domain": "web", **origin, **({"max_tokens": budget} if budget else {}), **source}}
    for stage in data["stages"]:
        if "mixture" in stage:
            stage["mixture"] = {"web": {"share": 1.0, "sources": {"big": 1.0}}}
            stage.pop("replay", None)
    data["max_epochs"] = 1000  # the stages draw ~3.5M tokens; a budget of 30k is read >100 times
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def _ds_bytes(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.ds"))}


# ---------------------------------------------------------------------------------------------
# The budget arithmetic

def test_reference_budgets_cover_what_the_stages_draw_and_little_more(monkeypatch, tmp_path):
    monkeypatch.setenv("SCRATCH", str(tmp_path))
    recipe = load_recipe(ROOT / "recipes" / "llama500m.yaml")
    plan = build_plan(recipe)
    for b in source_budgets(plan).values():
        by_hand = sum(round(fw.weight * s.tokens) for s in plan.stages for fw in s.weights if fw.source == b.source)
        assert b.drawn == by_hand > 0
        assert b.drawn / recipe.max_epochs <= b.budget <= 1.1 * b.drawn
        assert b.budget >= b.drawn * BUDGET_MARGIN and b.basis == "plan"


def test_round_up_keeps_three_significant_figures():
    assert round_up(1_234_567) == 1_240_000 and round_up(999) == 999 and round_up(1001) == 1010 and round_up(0) == 0


def test_overrides_and_their_limits(tiny_dict, write_recipe):
    data = tiny_dict
    data["sources"]["forum"]["max_tokens"] = "1M"
    data["sources"]["prose"]["budget_fraction"] = 0.5
    budgets = source_budgets(build_plan(load_recipe(write_recipe(data))))
    assert budgets["forum"].budget == 1_000_000 and budgets["forum"].basis == "max_tokens"
    assert budgets["prose"].budget * 2 == pytest.approx(budgets["prose"].drawn, abs=2)
    data["max_epochs"] = 4
    data["sources"]["prose"]["budget_fraction"] = 0.1  # read 10 times > max_epochs 4
    with pytest.raises(UserError) as exc:
        source_budgets(build_plan(load_recipe(write_recipe(data))))
    assert exc.value.field == "sources.prose.budget_fraction" and "max_epochs" in exc.value.problem
    data["sources"]["prose"]["max_tokens"] = 10
    with pytest.raises(UserError, match="at most one of"):
        load_recipe(write_recipe(data))


# ---------------------------------------------------------------------------------------------
# The cap, on data many times its budget

@pytest.mark.slow
def test_kept_tokens_land_within_tolerance_of_the_budget_and_the_plan_says_the_same(tmp_path, tiny_tokenizer, capsys):
    recipe = _recipe(tmp_path, tiny_tokenizer, budget=30_000)
    assert prepare_data.main([recipe, "--build-tokenizer"]) == 0  # the plan samples with it once it is there
    capsys.readouterr()
    assert prepare_data.main([recipe, "--plan", "--json"]) == 0
    (planned,) = json.loads(capsys.readouterr().out)
    assert prepare_data.main([recipe, "--workers", "1"]) == 0
    m = read_manifest(tmp_path / "tiny" / "big")
    assert m["budget"] == planned["tokens_budget"] == 30_000 and m["tasks"] == planned["tasks"]
    assert abs(m["tokens"] - 30_000) <= CAP_TOLERANCE * 30_000 and not m["exhausted"]
    assert m["documents_read"] < 4 * 800 / 5  # it stopped reading: the source holds ten times the budget
    assert planned["estimate_basis"] == "sample" and planned["documents"] == pytest.approx(m["documents_kept"], rel=0.15)


@pytest.mark.slow
def test_n_tasks_give_the_budget_as_one_task_does(tmp_path, tiny_tokenizer):
    tokens = {}
    for tasks in (1, 4):
        work = tmp_path / str(tasks)
        recipe = _recipe(work, tiny_tokenizer, budget=40_000)
        assert prepare_data.main([recipe, "--workers", "2", "--tasks", str(tasks)]) == 0
        m = read_manifest(work / "tiny" / "big")
        assert m["tasks"] == tasks and m["tasks_at_budget"] == tasks
        tokens[tasks] = m["tokens"]
    assert abs(tokens[1] - tokens[4]) <= CAP_TOLERANCE * 40_000
    assert all(abs(t - 40_000) <= CAP_TOLERANCE * 40_000 for t in tokens.values())


@pytest.mark.slow
def test_a_source_smaller_than_its_budget_is_read_whole_and_says_so(tmp_path, tiny_tokenizer):
    recipe = _recipe(tmp_path, tiny_tokenizer, budget=5_000_000)
    assert prepare_data.main([recipe, "--workers", "2"]) == 0
    m = read_manifest(tmp_path / "tiny" / "big")
    assert m["exhausted"] and m["documents_read"] == 4 * 800 and m["tokens"] < 5_000_000


@pytest.mark.slow
def test_a_streamed_dataset_splits_its_files_between_tasks(tmp_path, tiny_tokenizer):
    # budget above the data: every task reads its own files to the end; together they read each
    # document once (a task reading everything would count 2 x 3,200)
    recipe = _recipe(tmp_path, tiny_tokenizer, budget=5_000_000, hub=True)
    assert prepare_data.main([recipe, "--workers", "2", "--tasks", "2"]) == 0
    m = read_manifest(tmp_path / "tiny" / "big")
    assert m["tasks"] == 2 and m["documents_read"] == 4 * 800 and m["exhausted"]


def test_tasks_default_from_the_budget_and_the_files(tmp_path, tiny_tokenizer, monkeypatch):
    import smolrecipe.data.data_plan as data_plan

    monkeypatch.setattr(data_plan, "TOKENS_PER_TASK", 10_000)
    recipe = resolve_recipe(load_recipe(_recipe(tmp_path, tiny_tokenizer, budget=25_000)))
    source = recipe.sources["big"]
    assert data_plan.default_tasks(source, 25_000) == 3  # ceil(25k / 10k)
    assert data_plan.default_tasks(source, 1_000_000) == 4  # no more than the 4 files
    hub = source.model_copy(update={"path": None, "hf": "org/set"})
    assert data_plan.default_tasks(hub, 1_000_000, shards=7) == 7 and data_plan.default_tasks(hub, 1_000_000) == 100


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_bytes(tmp_path, tiny_tokenizer):
    whole = tmp_path / "whole"
    recipe = _recipe(whole, tiny_tokenizer, budget=60_000)
    assert prepare_data.main([recipe, "--workers", "1", "--tasks", "4"]) == 0
    expected = _ds_bytes(whole / "tiny" / "big")

    killed = tmp_path / "killed"
    recipe = _recipe(killed, tiny_tokenizer, budget=60_000)
    cmd = [sys.executable, str(ROOT / "tools" / "prepare_data.py"), recipe, "--workers", "1", "--tasks", "4"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list((killed / "tiny" / ".work").glob("big-*/logs/tokenize/completions/*")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert read_manifest(killed / "tiny" / "big") is None  # nothing published half-way
    assert prepare_data.main([recipe, "--workers", "1", "--tasks", "4"]) == 0
    assert _ds_bytes(killed / "tiny" / "big") == expected


# ---------------------------------------------------------------------------------------------
# Nothing lost in silence

def _broken_file(folder, bad_line: int = 181, n: int = 401):
    lines = [json.dumps(d).encode() for d in _documents(n, 7)]
    lines[bad_line - 1] = lines[bad_line - 1].replace(b"river", b"riv\xe9r")  # Latin-1, not UTF-8
    lines[300] = b'{"text": "unterminated'
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "00000.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return folder / "00000.jsonl"


@pytest.mark.slow
def test_undecodable_and_malformed_lines_are_counted_and_the_rest_is_read(tmp_path, tiny_tokenizer):
    recipe = _recipe(tmp_path, tiny_tokenizer, budget=None, max_lost_fraction=0.01)
    for old in (tmp_path / "big").glob("*"):
        old.unlink()
    _broken_file(tmp_path / "big")
    assert prepare_data.main([recipe, "--workers", "1"]) == 0
    m = read_manifest(tmp_path / "tiny" / "big")
    assert m["documents_read"] == 399 and m["lost"] == {"bad_json": 1, "not_utf8": 1}


@pytest.mark.slow
def test_losing_more_than_the_threshold_fails_naming_the_file_and_line(tmp_path, tiny_tokenizer, capsys):
    recipe = _recipe(tmp_path, tiny_tokenizer, budget=None)  # default max_lost_fraction 0.001: 2 of 401 is too many
    for old in (tmp_path / "big").glob("*"):
        old.unlink()
    bad = _broken_file(tmp_path / "big")
    capsys.readouterr()
    assert prepare_data.main([recipe, "--workers", "1"]) == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert f"sources.big: 2 of 401 records could not be read (1 bad json, 1 not utf8); first at {bad} line 181 (not utf8)" in line
    assert "fix: repair or drop the bad records and delete" in line and "or raise sources.big.max_lost_fraction" in line
    assert read_manifest(tmp_path / "tiny" / "big") is None
    # accepting the loss: the same run publishes what it read, without reading again
    data = yaml.safe_load(open(recipe))
    data["sources"]["big"]["max_lost_fraction"] = 0.01
    open(recipe, "w").write(yaml.safe_dump(data, sort_keys=False))
    assert prepare_data.main([recipe, "--workers", "1"]) == 0
    assert read_manifest(tmp_path / "tiny" / "big")["lost"] == {"bad_json": 1, "not_utf8": 1}


def test_a_gated_source_without_a_login_fails_before_any_work(tmp_path, tiny_tokenizer, monkeypatch, capsys):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    recipe = _recipe(tmp_path, tiny_tokenizer, hub=True, gated=True)
    capsys.readouterr()
    assert prepare_data.main([recipe]) == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert "sources.big.hf:" in line and "is gated and this machine has no Hugging Face token" in line
    assert "fix: on the login node run `hf auth login`" in line
    assert not (tmp_path / "tiny").exists()


def test_the_reference_plan_prints_offline_with_a_budget_for_every_source(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SCRATCH", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert prepare_data.main([str(ROOT / "recipes" / "llama500m.yaml"), "--plan", "--json"]) == 0
    plans = json.loads(capsys.readouterr().out)
    recipe = load_recipe(ROOT / "recipes" / "llama500m.yaml")
    assert [p["source"] for p in plans] == list(recipe.sources)
    for p in plans:
        assert p["tokens_drawn"] / recipe.max_epochs <= p["tokens_budget"] <= 1.1 * p["tokens_drawn"]
        # no tokenizer folder offline: the card's figures; a needle source's from its settings
        assert p["tasks"] >= 1 and p["estimate_basis"] == ("needles" if p["source"] == "needles" else "card")
    assert not (tmp_path / "smolrecipe").exists()  # a plan writes nothing
    by_name = {p["source"]: p for p in plans}
    assert by_name["starcoder_python"]["documents"] > 0 and by_name["openmathreasoning"]["gigabytes"] is None
    assert by_name["cosmopedia"]["tasks"] == 104  # one per 50M tokens would be 218; the card says 104 files


def test_a_gated_tokenizer_without_a_login_fails_before_it_is_fetched(tmp_path, monkeypatch, tiny_dict, write_recipe):
    from smolrecipe.data.tokenizer import build_tokenizer

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    base_tokenizer(tiny_dict, "meta-llama/Llama-3.2-1B", tmp_path / "tok")
    tiny_dict["tokenizer"].update(revision="4e20de362430cd3b72f300e6b0f18e50e7166e08", gated=True)
    with pytest.raises(UserError) as exc:
        build_tokenizer(load_recipe(write_recipe(tiny_dict)))
    assert exc.value.field == "tokenizer.base" and "is gated" in exc.value.problem
    assert "on the login node run `hf auth login`" in exc.value.fix and not (tmp_path / "tok").exists()


@pytest.mark.slow
def test_a_smaller_budget_reuses_the_folder_and_a_larger_one_prepares_it_again(tmp_path, tiny_tokenizer):
    recipe = _recipe(tmp_path, tiny_tokenizer, budget=30_000)
    assert prepare_data.main([recipe, "--workers", "1"]) == 0
    first = read_manifest(tmp_path / "tiny" / "big")
    smaller = _recipe(tmp_path, tiny_tokenizer, budget=20_000)
    assert prepare_data.main([smaller, "--workers", "1"]) == 0
    assert read_manifest(tmp_path / "tiny" / "big") == first  # up to date: 30k tokens serve a 20k budget
    assert [p.name for p in (tmp_path / "tiny" / ".work").iterdir()] == [f"big-{first['fingerprint']}b30000"]
    larger = _recipe(tmp_path, tiny_tokenizer, budget=45_000)
    assert prepare_data.main([larger, "--workers", "1"]) == 0
    again = read_manifest(tmp_path / "tiny" / "big")
    assert again["budget"] == 45_000 and abs(again["tokens"] - 45_000) <= CAP_TOLERANCE * 45_000
    assert [p.name for p in (tmp_path / "tiny" / ".work").iterdir()] == [f"big-{again['fingerprint']}b45000"]


@pytest.mark.slow
def test_a_folder_cut_short_after_preparation_is_prepared_again_to_the_same_bytes(tmp_path, tiny_tokenizer):
    recipe = _recipe(tmp_path, tiny_tokenizer, budget=30_000)
    assert prepare_data.main([recipe, "--workers", "1"]) == 0
    folder = tmp_path / "tiny" / "big"
    expected = _ds_bytes(folder)
    (ds,) = folder.glob("*.ds")
    ds.write_bytes(ds.read_bytes()[:-1000])  # the work folder says every step is done; the folder is not
    assert prepare_data.main([recipe, "--workers", "1"]) == 0
    assert _ds_bytes(folder) == expected
