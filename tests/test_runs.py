"""The run folder's contract: the paths every part of the project uses, and its readers."""

import json

import pytest

from smolrecipe import runs
from smolrecipe.errors import UserError
from smolrecipe.recipe.loading import load_recipe
from smolrecipe.recipe.plan import build_plan


def test_paths_agree_with_the_plan_and_each_backend(root):
    recipe = load_recipe(root / "recipes" / "tiny.yaml")
    plan = build_plan(recipe)
    for stage in plan.stages:
        assert stage.checkpoints_path == f"{recipe.paths.runs}/tiny/{stage.name}/checkpoints" == runs.checkpoints_dir(recipe, stage.name)
        assert stage.final_checkpoint() == f"{stage.checkpoints_path}/{stage.train_steps}"
        local = runs.local_dir(recipe, stage.name)
        assert runs.stage_of_backend_dir(local) == (runs.backend_dir(recipe, stage.name, "nanotron"), "local")
        assert runs.local_final_checkpoint(recipe, stage) == local / f"checkpoint-{stage.train_steps}"
    assert runs.results_dir(runs.run_dir(recipe), "sft", 256).as_posix().endswith("tiny/eval/sft/step-256")


def test_latest_step_and_json_readers(tmp_path):
    assert runs.latest_step(tmp_path) is None
    (tmp_path / runs.LATEST).write_text("128\n")
    assert runs.latest_step(tmp_path) == 128
    broken = tmp_path / runs.SUMMARY
    broken.write_text('{"stage": "stage1", ')  # cut off by a kill
    assert runs.read_json_if_any(broken) == {}
    with pytest.raises(UserError, match=r"summary.json: not valid JSON .*; fix: rerun the stage"):
        runs.read_summary(tmp_path)
    broken.write_bytes(b"\xff\xfe")
    with pytest.raises(UserError, match="not UTF-8"):
        runs.read_json(broken, "delete it")


def _stage(folder, name, index, steps):
    folder.mkdir(parents=True)
    (folder / runs.LOG).write_text("".join(json.dumps({"step": s, "tokens": s * 10, "loss": 5.0 / s}) + "\n" for s in range(1, steps + 1)))
    if index is not None:
        (folder / runs.SUMMARY).write_text(json.dumps({"stage": name, "index": index, "steps": steps}))


def test_find_stages_reads_both_backends_in_training_order(tmp_path):
    _stage(tmp_path / "stage2" / "local", "stage2", 1, 3)  # the local backend's folder
    _stage(tmp_path / "stage1", "stage1", 0, 4)  # nanotron's
    _stage(tmp_path / "stage3", "stage3", None, 2)  # unfinished: after the finished ones
    stages = runs.find_stages(tmp_path)
    assert [(s.name, s.steps, s.finished) for s in stages] == [("stage1", 4, True), ("stage2", 3, True), ("stage3", 2, False)]
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no training logs here"):
        runs.find_stages(tmp_path / "empty")
