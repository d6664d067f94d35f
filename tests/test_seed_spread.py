"""bench/seed_spread.py: the per-seed copies of a recipe, and reading their scores."""

import importlib.util
import json

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
