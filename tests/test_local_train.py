"""The local backend end to end on the tiny recipe's real data: the whole chain, the LR the
optimizer really used, resume after a kill, SFT masking, wandb offline."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sample
import train_local
from conftest import ROOT, recipe_variant, sft_stage, shorten

from smolrecipe.backends.lr_schedule import stage_lrs
from smolrecipe.recipe.envpaths import resolve_recipe
from smolrecipe.recipe.loading import load_recipe
from smolrecipe.recipe.plan import build_plan
from smolrecipe.runs import SAMPLES, read_log, run_dir
from smolrecipe.runs import local_dir as stage_dir

pytestmark = pytest.mark.slow


def short_chain(data: dict) -> None:
    """The tiny recipe with fewer steps, so the chain runs in seconds; stage2 carries the optimizer."""
    shorten(data, steps=(16, 8, 4, 3), sft_steps=6, warmup=2, checkpoint_interval=4)
    data["stages"][1]["load_optimizer"] = True


@pytest.fixture(scope="module")
def chain(prepared, tmp_path_factory):
    """The short chain trained once, uninterrupted: (recipe path, loaded recipe)."""
    recipe_path, _ = prepared
    path = recipe_variant(recipe_path, tmp_path_factory.mktemp("chain") / "tiny.yaml", short_chain)
    assert train_local.main([str(path), "--stage", "all", "--except", "preference", "--except", "long"]) == 0  # as make demo
    recipe = resolve_recipe(load_recipe(path))
    assert (stage_dir(recipe, "sft") / "summary.json").is_file()
    assert not stage_dir(recipe, "preference").exists() and not stage_dir(recipe, "long").exists()
    # the samples of make demo: base and SFT; the preference stage is not trained yet, so not asked
    assert sample.main([str(path), "--max-new-tokens", "2"]) == 0
    samples = Path(run_dir(recipe)) / SAMPLES
    assert list(json.loads(samples.read_text())["models"]) == ["base", "sft"]
    assert train_local.main([str(path), "--stage", "all"]) == 0  # as make midtrain: the finished stages are skipped
    assert (stage_dir(recipe, "preference") / "summary.json").is_file()
    assert sample.main([str(path), "--max-new-tokens", "2"]) == 0  # and make midtrain's samples add it
    assert list(json.loads(samples.read_text())["models"]) == ["base", "sft", "preference"]
    return path, recipe


def test_the_context_extension_trains_its_windows_under_its_rope_base(chain):
    """The long_context stage loads stage3's weights under its own RoPE base and trains 1,024-token
    windows; its checkpoint says so, and its first loss is the parent's weights under the new base."""
    from transformers import LlamaConfig

    _, recipe = chain
    plan = build_plan(recipe)
    long, parent = plan.stage("long"), plan.stage("stage3")
    saved = LlamaConfig.from_pretrained(stage_dir(recipe, "long") / f"checkpoint-{long.train_steps}")
    assert saved.rope_parameters["rope_theta"] == long.rope_theta == 100_000.0 and saved.max_position_embeddings == 1024
    before = LlamaConfig.from_pretrained(stage_dir(recipe, "stage3") / f"checkpoint-{parent.train_steps}")
    assert before.rope_parameters["rope_theta"] == 10_000.0 and before.max_position_embeddings == 128
    summary = json.loads((stage_dir(recipe, "long") / "summary.json").read_text())
    assert summary["tokens"] == long.train_steps * long.global_batch * 1024
    assert any("needles" in folder for folder in summary["samples_per_folder"])


def test_every_stage_finishes_from_its_parent(chain):
    _, recipe = chain
    plan = build_plan(recipe)
    for i, stage in enumerate(plan.stages):
        out = stage_dir(recipe, stage.name)
        summary = json.loads((out / "summary.json").read_text())
        assert summary["index"] == i and summary["steps"] == stage.train_steps
        assert (out / f"checkpoint-{stage.train_steps}" / "model.safetensors").is_file()
        assert (out / f"checkpoint-{stage.train_steps}" / "optimizer.pt").is_file()
        log = read_log(out / "log.jsonl")[0]
        assert [r["step"] for r in log] == list(range(1, stage.train_steps + 1))
        if stage.init_from:
            parent = plan.stage(stage.init_from)
            assert summary["init_from"] == str(stage_dir(recipe, parent.name) / f"checkpoint-{parent.train_steps}")
            # stage2 carries stage1's AdamW moments (short_chain), the others start fresh
            assert summary["optimizer_from"] == (f"{summary['init_from']}/optimizer.pt" if stage.load_optimizer else None)
        if stage.reads_sources:
            assert summary["tokens"] == stage.tokens
            assert set(summary["samples_per_folder"]) == {fw.folder for fw in stage.weights}
    assert not list(stage_dir(recipe, "stage1").glob(".staging*"))


def test_the_optimizer_used_nanotrons_lr_at_every_step(chain):
    """The Trainer really steps our scheduler: the LR logged for each step is the schedule's,
    also in stage2, which starts from stage1's optimizer state with a fresh schedule."""
    _, recipe = chain
    for stage in build_plan(recipe).stages:
        logged = [r["lr"] for r in read_log(stage_dir(recipe, stage.name) / "log.jsonl")[0]]
        assert logged == pytest.approx(stage_lrs(stage), rel=1e-6, abs=1e-12), stage.name


def test_first_stage_learns(chain):
    _, recipe = chain
    log = read_log(stage_dir(recipe, "stage1") / "log.jsonl")[0]
    assert log[-1]["loss"] < log[0]["loss"] - 0.5


def test_sft_model_carries_its_chat_template_and_stops_at_end_of_turn(chain):
    _, recipe = chain
    final = stage_dir(recipe, "sft") / "checkpoint-6"
    template = (final / "chat_template.jinja").read_text()
    assert template.strip() == (ROOT / "tokenizer" / "chatml.jinja").read_text().strip()
    generation = json.loads((final / "generation_config.json").read_text())
    assert generation["eos_token_id"] == recipe.tokenizer.eos_token_id


def test_preference_stage_prefers_the_chosen_answers(chain):
    """DPO from the SFT model, which is also its reference: the first loss is ln 2 exactly (policy and
    reference agree), and training moves it down while the reward accuracy rises."""
    _, recipe = chain
    out = stage_dir(recipe, "preference")
    log = read_log(out / "log.jsonl")[0]
    assert log[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert log[-1]["loss"] < log[0]["loss"] and log[-1]["reward_margin"] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "preference" and summary["pairs"] > 0
    final = out / "checkpoint-6"
    assert (final / "chat_template.jinja").read_text().strip() == (ROOT / "tokenizer" / "chatml.jinja").read_text().strip()


def copy_parent(recipe, other, stage: str = "sft") -> None:
    """`stage`'s finished local folder of `recipe`'s run, copied into `other`'s run (a variant recipe)."""
    shutil.copytree(stage_dir(recipe, stage), stage_dir(other, stage))


def test_orpo_learns_without_a_reference_model(chain, tmp_path):
    path, recipe = chain

    def orpo(data):
        # ORPO's loss is mostly the SFT loss on the chosen answers: at the short chain's LR its steps differ by
        # batch noise alone, so the variant trains long and fast enough for the fall to stand out of it
        stage = next(s for s in data["stages"] if s["kind"] == "preference")
        stage.update(method="orpo", steps=24)
        stage["lr"]["peak"] = 2e-3

    variant = recipe_variant(path, tmp_path / "tiny.yaml", orpo)
    other = resolve_recipe(load_recipe(variant))
    copy_parent(recipe, other)
    assert train_local.main([str(variant), "--stage", "preference"]) == 0
    log = read_log(stage_dir(other, "preference") / "log.jsonl")[0]
    assert [r["step"] for r in log] == list(range(1, 25)) and "nll_loss" in log[0]
    first, last = (sum(r["loss"] for r in part) / 4 for part in (log[:4], log[-4:]))
    assert last < first - 0.5, (first, last)


def test_preference_resumes_after_a_kill_to_the_same_losses(chain, tmp_path):
    path, recipe = chain
    variant = recipe_variant(path, tmp_path / "tiny.yaml")
    other = resolve_recipe(load_recipe(variant))
    copy_parent(recipe, other)
    out = stage_dir(other, "preference")
    cmd, env = train_command(variant, "preference")
    kill_once_written(cmd, env, out / "checkpoint-4")
    assert not (out / "summary.json").exists()
    resume_to_the_same_losses(cmd, env, out, stage_dir(recipe, "preference"), steps=6)


def test_preference_job_stops_at_its_stop_file_and_resumes(chain, tmp_path):
    """The cluster's preference job (tools/train_preference.py): its own stage folder and starting
    folder, and the stop file the job writes on SLURM's warning: a checkpoint at the end of the step,
    then the rerun finishes from it."""
    from smolrecipe.backends.local.train import run_stage
    from smolrecipe.runs import STOP_FILE

    path, recipe = chain
    plan = build_plan(recipe)
    out = tmp_path / "preference"
    out.mkdir()
    (out / STOP_FILE).write_text("test\n")
    parent = stage_dir(recipe, "sft") / "checkpoint-6"
    first = run_stage(recipe, plan, "preference", resume=True, out=out, parent_folder=parent, stop_file=out / STOP_FILE)
    assert first.stopped and first.summary["steps"] == 1 and (out / "checkpoint-1").is_dir()
    (out / STOP_FILE).unlink()
    done = run_stage(recipe, plan, "preference", resume=True, out=out, parent_folder=parent, stop_file=out / STOP_FILE)
    assert not done.stopped and done.summary["init_from"] == str(parent) and (out / "checkpoint-6").is_dir()
    ours, reference = read_log(out / "log.jsonl")[0], read_log(stage_dir(recipe, "preference") / "log.jsonl")[0]
    assert [r["loss"] for r in ours] == pytest.approx([r["loss"] for r in reference], rel=1e-5)


def test_a_finished_stage_is_not_run_again(chain, capsys):
    path, recipe = chain
    before = (stage_dir(recipe, "stage1") / "summary.json").read_text()
    assert train_local.main([str(path), "--stage", "stage1"]) == 0
    assert "already finished" in capsys.readouterr().out
    assert (stage_dir(recipe, "stage1") / "summary.json").read_text() == before


def train_command(recipe, stage: str) -> tuple[list[str], dict[str, str]]:
    """tools/train_local.py for one stage, as a user runs it, and its environment (wandb off)."""
    return ([sys.executable, str(ROOT / "tools" / "train_local.py"), str(recipe), "--stage", stage],
            {**os.environ, "WANDB_MODE": "disabled"})


def kill_once_written(cmd: list[str], env: dict[str, str], checkpoint) -> None:
    """Start `cmd` and SIGKILL it as soon as `checkpoint` is in place (mid-stage, as a node failure would)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not checkpoint.is_dir():
        assert proc.poll() is None, f"the run ended before writing {checkpoint.name}"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def resume_to_the_same_losses(cmd: list[str], env: dict[str, str], out, uninterrupted, steps: int) -> list[dict]:
    """Run `cmd --resume` to the end; its log in `out` must have every step once, with the losses of
    the uninterrupted run's log in `uninterrupted` (returned)."""
    done = subprocess.run(cmd + ["--resume"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    ours = read_log(out / "log.jsonl")[0]
    reference = read_log(uninterrupted / "log.jsonl")[0]
    assert [r["step"] for r in ours] == list(range(1, steps + 1))
    assert [r["loss"] for r in ours] == pytest.approx([r["loss"] for r in reference], rel=1e-5)
    return reference


def test_resume_after_a_kill_reaches_the_same_loss(chain, tmp_path):
    """SIGKILL a run once its step-8 checkpoint is in place; --resume finishes it with the losses
    of the uninterrupted run."""
    path, recipe = chain
    copy = recipe_variant(path, tmp_path / "tiny.yaml")
    resumed = resolve_recipe(load_recipe(copy))
    out = stage_dir(resumed, "stage1")
    cmd, env = train_command(copy, "stage1")
    kill_once_written(cmd, env, out / "checkpoint-8")
    assert not (out / "summary.json").exists()
    assert not (out / "checkpoint-16").exists()

    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert again.returncode == 2 and "--resume" in again.stderr  # never silently starts over

    reference = resume_to_the_same_losses(cmd, env, out, stage_dir(recipe, "stage1"), steps=16)
    assert json.loads((out / "summary.json").read_text())["final_loss"] == pytest.approx(reference[-1]["loss"], rel=1e-5)


def test_wandb_runs_offline(chain, tmp_path):
    path, _ = chain

    def offline(data):
        data["tracking"]["wandb_mode"] = "offline"

    copy = recipe_variant(path, tmp_path / "tiny.yaml", offline)
    recipe = resolve_recipe(load_recipe(copy))
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    cmd = [sys.executable, str(ROOT / "tools" / "train_local.py"), str(copy), "--stage", "stage1", "--max-steps", "2"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    runs = list((stage_dir(recipe, "stage1").parent.parent / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb")), runs


def test_changed_settings_are_not_resumed_or_reused(chain, capsys):
    """Editing the SFT section keeps the finished pretraining stages, but the SFT run made under the
    old settings is neither reused nor continued."""
    path, _ = chain

    def new_sft_lr(data):
        sft_stage(data)["lr"]["peak"] *= 2

    edited = recipe_variant(path, path.with_name("edited.yaml"), new_sft_lr)
    assert train_local.main([str(edited), "--stage", "stage3"]) == 0
    assert "already finished" in capsys.readouterr().out
    assert train_local.main([str(edited), "--stage", "sft", "--resume"]) == 2
    assert "other settings" in capsys.readouterr().err
