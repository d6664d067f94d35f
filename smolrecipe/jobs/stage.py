"""What a SLURM training job runs for one stage (tools/run_stage.py, called by slurm/common.sh).

Both backends keep the same contract, so the batch scripts need no backend logic of their own:
- a stage that already finished is not run again (exit 0, one line saying so);
- a stage with checkpoints of its own continues from the newest one, LR schedule and optimizer
  included (the resume chain of smolrecipe.recipe.plan.resume_interrupted);
- a stop request (SIGUSR1, forwarded by the batch script) ends the run at a checkpoint with exit
  code PREEMPTED, on which the batch script requeues the job.

nanotron: the job's config is rendered with its paths resolved to `<runs>/<recipe>/<stage>/config.yaml`
and trained by our entry point, `torchrun --standalone --nproc_per_node=<gpus> tools/train_nanotron.py
--config-file <config>` (smolrecipe.backends.nanotron.train: nanotron's own trainer, our dataloaders, logs
and save-on-stop). On a stop request the job writes the run folder's stop file; every rank sees it
at the end of its step, nanotron saves a checkpoint there and the workers exit; only a run that
does not stop within `STOP_GRACE_S` is ended by a signal. The local backend (the CPU rehearsal)
checkpoints at the step the signal arrived in too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from smolrecipe import PROJECT_ROOT
from smolrecipe.atomic import write_file, write_json
from smolrecipe.backends.nanotron.config import stage_fingerprint
from smolrecipe.errors import UserError
from smolrecipe.preemption import PREEMPTED, StopRequest
from smolrecipe.recipe.envpaths import resolve_recipe
from smolrecipe.recipe.plan import StagePlan, build_plan
from smolrecipe.recipe.schema import Recipe
from smolrecipe.runs import CONFIG, SETTINGS, STOP_FILE, latest_step, read_settings, stage_dir

ENTRY_POINT = PROJECT_ROOT / "tools" / "train_nanotron.py"
STOP_GRACE_S = 480.0  # SLURM warns 600 s before the limit: time for a step and a checkpoint


# ---------------------------------------------------------------------------------------------
# nanotron


@dataclass(frozen=True)
class NanotronJob:
    stage: StagePlan
    config: Path  # the resolved config this job trains with
    command: list[str]
    resumes_from: str | None  # the checkpoint nanotron loads (own latest, parent's final) or None


def nanotron_command(gpus: int, config: Path) -> list[str]:
    return ["torchrun", "--standalone", f"--nproc_per_node={gpus}", str(ENTRY_POINT), "--config-file", str(config)]


def prepare_nanotron(recipe_path: str, name: str, gpus: int, dry_run: bool = False) -> NanotronJob | None:
    """Check the stage and write its resolved config; None when the stage has already finished."""
    from smolrecipe.backends.nanotron.generate import render  # renders with the resume chain resolved against disk

    rendered = render(recipe_path, resolve=True)
    recipe = resolve_recipe(rendered.recipe)
    stage = rendered.plan.checked_stage(name)
    processes = recipe.parallelism.dp * recipe.parallelism.tp * recipe.parallelism.pp
    if gpus != processes:
        raise UserError("parallelism", f"dp x tp x pp = {processes} processes, but the job has {gpus} GPU(s)",
                          f"submit with --gpus-per-node={processes} (tools/submit.py takes cluster.gpus_per_node), "
                          "or change parallelism to match the node")
    run_dir = Path(stage_dir(recipe, name))
    step = latest_step(stage.checkpoints_path)
    as_planned = build_plan(recipe)  # the fingerprint is of the stage itself, not of where this job resumes
    fingerprint = stage_fingerprint(as_planned, as_planned.stage(name))
    if step is not None:
        recorded = read_settings(run_dir).get("fingerprint")
        if recorded is not None and recorded != fingerprint:
            raise UserError("recipe", f"{stage.checkpoints_path} holds checkpoints made with other settings than the "
                              "recipe's now (the stage's config or a parent stage changed)",
                              f"move {run_dir} away to train the stage again")
        if step >= stage.train_steps:
            return None
    if stage.init_from is not None and step is None:
        parent = rendered.plan.stage(stage.init_from)
        if latest_step(parent.checkpoints_path) != parent.train_steps and not dry_run:
            raise UserError(f"{name}.init_from", f"{stage.init_from} has not finished: {parent.final_checkpoint()} "
                              "does not exist", f"train {stage.init_from} first (slurm/{stage.init_from}.sh)")
    config = run_dir / CONFIG
    write_file(config, rendered.files[f"{name}.yaml"])
    write_json(run_dir / SETTINGS, {"stage": name, "index": [s.name for s in as_planned.stages].index(name),
                                    "fingerprint": fingerprint, "recipe_hash": rendered.recipe.hash(), "backend": "nanotron"})
    (run_dir / STOP_FILE).unlink(missing_ok=True)  # a stop file left by the previous (requeued) job
    resumes_from = stage.resume_checkpoint_path if (step is not None or stage.init_from is not None) else None
    return NanotronJob(stage, config, nanotron_command(gpus, config), resumes_from)


def nanotron_environment(recipe: Recipe) -> dict[str, str]:
    """This process's environment plus wandb's settings from the recipe (nanotron logs to wandb
    whenever wandb is importable; compute nodes have no internet, so offline unless the recipe or
    the user's environment says otherwise)."""
    env = dict(os.environ)
    wandb_mode = "disabled" if recipe.tracking.wandb_mode == "disabled" else env.get("WANDB_MODE", recipe.tracking.wandb_mode)
    env.update(WANDB_MODE=wandb_mode, WANDB_PROJECT=env.get("WANDB_PROJECT", recipe.tracking.project))
    env.setdefault("WANDB_DIR", str(Path(stage_dir(recipe, "wandb")).parent))
    return env


def run_until_stopped(command: list[str], stop: StopRequest, stop_file: Path | None = None, poll_s: float = 1.0,
                      env: dict[str, str] | None = None, grace_s: float = STOP_GRACE_S) -> int:
    """Run `command` in its own process group. On a stop request, write `stop_file` (the run stops
    itself at a checkpoint) or, without one, or when the run has not ended `grace_s` later, end the
    group with SIGTERM (torchrun passes it on to its workers); return PREEMPTED."""
    proc = subprocess.Popen(command, start_new_session=True, env=env)
    asked_at = None
    terminated = False
    while True:
        try:
            proc.wait(timeout=poll_s)
            break
        except subprocess.TimeoutExpired:
            if not stop.requested:
                continue
            if asked_at is None:
                asked_at = time.monotonic()
                if stop_file is not None:
                    print(f"{stop.name}: asking the run to stop at the end of its step, with a checkpoint", flush=True)
                    write_file(stop_file, f"{stop.name}\n")
            if not terminated and (stop_file is None or time.monotonic() - asked_at > grace_s):
                print(f"{stop.name}: ending {command[0]}; the requeued job resumes from the newest checkpoint", flush=True)
                os.killpg(proc.pid, signal.SIGTERM)
                terminated = True
    if proc.returncode == 0:
        return 0  # finished before it could stop
    return PREEMPTED if stop.requested else proc.returncode


# ---------------------------------------------------------------------------------------------
# The local backend (CPU rehearsal)


def run_local(recipe: Recipe, name: str, stop: StopRequest) -> int:
    from smolrecipe.backends.local.train import run_stage  # torch and transformers load only for this backend

    plan = build_plan(recipe)
    plan.checked_stage(name)
    result = run_stage(recipe, plan, name, resume=True, stop=stop)
    print(result.line(), flush=True)
    return PREEMPTED if result.stopped else 0
