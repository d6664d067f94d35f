"""bench/seed_spread.py: the per-seed copies of a recipe, and reading their scores."""

import importlib.util
import json
from pathlib import Path

import pytest
import yaml
from conftest import RECIPES, ROOT

from smolrecipe.recipe.envpaths import resolve_recipe
from smolrecipe.recipe.loading import load_recipe


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("seed_spread", ROOT / "bench" / "seed_spread.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_seed_copy_differs_from_its_recipe_only_in_the_seed_and_the_runs_folder(bench, tmp_path):
    path, trained, left_out = bench.seed_recipe(RECIPES / "tiny.yaml", 7, tmp_path / "runs", tmp_path)
    original, copy = yaml.safe_load((RECIPES / "tiny.yaml").read_text()), yaml.safe_load(path.read_text())
    assert (original["training"].pop("seed"), copy["training"].pop("seed")) == (42, 7)
    assert copy["paths"].pop("runs") == str(tmp_path / "runs")
    original["paths"].pop("runs")
    assert copy == original
    assert trained == ["stage1", "stage2", "stage3", "sft"] and left_out == ["preference", "long"]
    recipe = resolve_recipe(load_recipe(str(path)))  # still a recipe the tools accept
    assert recipe.training.seed == 7 and recipe.paths.runs == str(tmp_path / "runs")
    assert recipe.hash() != resolve_recipe(load_recipe(str(RECIPES / "tiny.yaml"))).hash()


def test_scores_are_read_from_each_stage_s_newest_world_result(bench, tmp_path):
    def result(stage, step, facts):
        folder = tmp_path / "tiny" / "eval" / stage / f"step-{step}"
        folder.mkdir(parents=True)
        task = {"mc_fact": 0.5, "em_fact": facts, "em_arithmetic": 0.25, "em": 0.0}
        model = {"stage": stage, "step": step}
        (folder / "world.json").write_text(json.dumps({"model": model, "tasks": {"qa:world": task}}))

    result("stage1", 80, 0.1)
    result("stage1", 640, 0.4)  # newer than step-80, though it sorts before it as text
    result("sft", 300, 0.6)
    scores = bench.world_scores(tmp_path, "tiny", ["stage1", "sft"])
    assert scores == {"stage1": {"mc_fact": 0.5, "em_fact": 0.4, "em_arithmetic": 0.25},
                      "sft": {"mc_fact": 0.5, "em_fact": 0.6, "em_arithmetic": 0.25}}
    with pytest.raises(SystemExit, match="no world-suite result for stage2"):
        bench.world_scores(tmp_path, "tiny", ["stage2"])


def _earlier_run(bench, tmp_path, seed=7):
    """An earlier run's work folder: the recipe copy and the pretraining stages' run and eval folders."""
    bases = tmp_path / "bases"
    path, _, _ = bench.seed_recipe(RECIPES / "tiny.yaml", seed, bases / f"seed-{seed}", bases)
    for stage in ("stage1", "stage2", "stage3"):
        (bases / f"seed-{seed}" / "tiny" / stage / "local").mkdir(parents=True)
        (bases / f"seed-{seed}" / "tiny" / "eval" / stage / "step-1").mkdir(parents=True)
    return bases


def _variant(tmp_path, change) -> Path:
    raw = yaml.safe_load((RECIPES / "tiny.yaml").read_text())
    change(raw)
    path = tmp_path / "variant" / "tiny.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_bases_are_linked_when_only_sft_differs(bench, tmp_path):
    bases = _earlier_run(bench, tmp_path)
    recipe = _variant(tmp_path, lambda raw: next(s for s in raw["stages"] if s["name"] == "sft")["lr"].update(peak=3.0e-5))
    runs = tmp_path / "work" / "seed-7"
    copy, _, _ = bench.seed_recipe(recipe, 7, runs, tmp_path / "work")
    bench.link_bases(bases, 7, copy, runs, ["stage1", "stage2", "stage3"])
    for part in ("tiny/stage1", "tiny/stage3", "tiny/eval/stage2"):
        assert (runs / part).is_symlink() and (runs / part).resolve() == (bases / "seed-7" / part).resolve()
    assert not (runs / "tiny" / "sft").exists()
    bench.link_bases(bases, 7, copy, runs, ["stage1", "stage2", "stage3"])  # resumed: the links stay
    trained_here = tmp_path / "other" / "seed-7"
    (trained_here / "tiny" / "stage1").mkdir(parents=True)
    with pytest.raises(SystemExit, match="holds a stage trained here; fix: give another --work"):
        bench.link_bases(bases, 7, copy, trained_here, ["stage1", "stage2", "stage3"])


@pytest.mark.parametrize(("change", "field"), [
    (lambda raw: raw["training"]["optimizer"].update(weight_decay=0.01), "training"),
    (lambda raw: raw["stages"][1]["lr"].update(peak=1.0e-3), "stages"),
    (lambda raw: raw["model"].update(num_key_value_heads=2), "model"),
])
def test_bases_are_refused_when_the_pretraining_would_differ(bench, tmp_path, change, field):
    bases = _earlier_run(bench, tmp_path)
    runs = tmp_path / "work" / "seed-7"
    copy, _, _ = bench.seed_recipe(_variant(tmp_path, change), 7, runs, tmp_path / "work")
    with pytest.raises(SystemExit, match=rf"tiny-seed7\.yaml differs from this recipe in {field}\b.*leave out --bases"):
        bench.link_bases(bases, 7, copy, runs, ["stage1", "stage2", "stage3"])
    assert not (runs / "tiny").exists()


def test_bases_must_be_an_earlier_run_of_the_same_seed(bench, tmp_path):
    bases = _earlier_run(bench, tmp_path, seed=8)
    runs = tmp_path / "work" / "seed-7"
    copy, _, _ = bench.seed_recipe(RECIPES / "tiny.yaml", 7, runs, tmp_path / "work")
    with pytest.raises(SystemExit, match=r"no tiny-seed7\.yaml there"):
        bench.link_bases(bases, 7, copy, runs, ["stage1", "stage2", "stage3"])


def test_a_rerun_continues_stages_cut_off_mid_way(bench, tmp_path, monkeypatch):
    """The copies are trained with --resume: after a killed bench, a stage with checkpoints and no
    summary continues (tools/train_local.py refuses to touch it without the flag)."""
    calls = []
    monkeypatch.setattr(bench, "run_tool", lambda *args: calls.append(args))
    monkeypatch.setattr(bench, "world_scores", lambda runs, name, stages: {s: dict.fromkeys(bench.METRICS, 0.5) for s in stages})
    bench.main(["--seeds", "7", "8", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out.json")])
    training = [args for args in calls if args[0] == "tools/train_local.py"]
    assert len(training) == 2 and all("--resume" in args and "--restart" not in args for args in training)
