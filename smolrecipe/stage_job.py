"""What a SLURM training job runs for one stage (tools/run_stage.py, called by slurm/common.sh).

Both backends keep the same contract, so the batch scripts need no backend logic of their own:
- a stage that already finished is not run again (exit 0, one line saying so);
- a stage with checkpoints of its own continues from the newest one, LR schedule and optimizer
  included (the resume chain of smolrecipe.plan.resume_interrupted);
- a stop request (SIGUSR1, forwarded by the batch script) ends the run at a checkpoint with exit
  code PREEMPTED, on which the batch script requeues the job.

nanotron: the job's config is rendered with its paths resolved to `<runs>/<recipe>/<stage>/config.yaml`
and trained by `torchrun --standalone --nproc_per_node=<gpus> <run_train.py> --config-file <config>`.
nanotron (at the pinned commit) cannot save on demand, so on a stop request torchrun is ended and
the requeued job resumes from the newest periodic checkpoint (`training.checkpoint_interval`).
The local backend (the CPU rehearsal) checkpoints at the step the signal arrived in.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from smolrecipe.atomic import write_file, write_json
from smolrecipe.envpaths import resolve_recipe
from smolrecipe.errors import RecipeError
from smolrecipe.nanotron_config import stage_fingerprint
from smolrecipe.plan import SETTINGS, StagePlan, build_plan, latest_step, stage_run_dir
from smolrecipe.preemption import PREEMPTED, StopRequest
from smolrecipe.recipe import Recipe

CONFIG = "config.yaml"


# ---------------------------------------------------------------------------------------------
# nanotron


@dataclass(frozen=True)
class NanotronJob:
    stage: StagePlan
    config: Path  # the resolved config this job trains with
    command: list[str]
    resumes_from: str | None  # the checkpoint nanotron loads (own latest, parent's final) or None


def nanotron_command(run_train: str, gpus: int, config: Path) -> list[str]:
    return ["torchrun", "--standalone", f"--nproc_per_node={gpus}", run_train, "--config-file", str(config)]


def prepare_nanotron(recipe_path: str, name: str, gpus: int, run_train: str, dry_run: bool = False) -> NanotronJob | None:
    """Check the stage and write its resolved config; None when the stage has already finished."""
    from smolrecipe.generate import render  # renders with the resume chain resolved against disk

    rendered = render(recipe_path, resolve=True)
    recipe = resolve_recipe(rendered.recipe)
    stage = rendered.plan.checked_stage(name)
    processes = recipe.parallelism.dp * recipe.parallelism.tp * recipe.parallelism.pp
    if gpus != processes:
        raise RecipeError("parallelism", f"dp x tp x pp = {processes} processes, but the job has {gpus} GPU(s)",
                          f"submit with --gpus-per-node={processes} (tools/submit.py takes cluster.gpus_per_node), "
                          "or change parallelism to match the node")
    run_dir = Path(stage_run_dir(recipe, name))
    step = latest_step(stage.checkpoints_path)
    as_planned = build_plan(recipe)  # the fingerprint is of the stage itself, not of where this job resumes
    fingerprint = stage_fingerprint(as_planned, as_planned.stage(name))
    if step is not None:
        recorded = _read_json(run_dir / SETTINGS).get("fingerprint")
        if recorded is not None and recorded != fingerprint:
            raise RecipeError("recipe", f"{stage.checkpoints_path} holds checkpoints made with other settings than the "
                              "recipe's now (the stage's config or a parent stage changed)",
                              f"move {run_dir} away to train the stage again")
        if step >= stage.train_steps:
            return None
    if stage.init_from is not None and step is None:
        parent = rendered.plan.stage(stage.init_from)
        if latest_step(parent.checkpoints_path) != parent.train_steps and not dry_run:
            raise RecipeError(f"{name}.init_from", f"{stage.init_from} has not finished: {parent.final_checkpoint()} "
                              "does not exist", f"train {stage.init_from} first (slurm/{stage.init_from}.sh)")
    if not dry_run and not Path(run_train).is_file():
        raise RecipeError("NANOTRON_RUN_TRAIN", f"nanotron's run_train.py is not at {run_train!r}",
                          "run slurm/setup_env.sh (it records where run_train.py is) or export NANOTRON_RUN_TRAIN=/path/run_train.py")
    config = run_dir / CONFIG
    write_file(config, rendered.files[f"{name}.yaml"])
    write_json(run_dir / SETTINGS, {"stage": name, "fingerprint": fingerprint, "recipe_hash": rendered.recipe.hash(),
                                    "backend": "nanotron"})
    resumes_from = stage.resume_checkpoint_path if (step is not None or stage.init_from is not None) else None
    return NanotronJob(stage, config, nanotron_command(run_train, gpus, config), resumes_from)


def nanotron_environment() -> dict[str, str]:
    """This process's environment, with $NANOTRON_PYTHONPATH (the datatrove nanotron's Nanoset
    was written against, installed apart by slurm/setup_env.sh) first on the path."""
    env = dict(os.environ)
    extra = [p for p in (env.get("NANOTRON_PYTHONPATH"), env.get("PYTHONPATH")) if p]
    if extra:
        env["PYTHONPATH"] = os.pathsep.join(extra)
    return env


def run_until_stopped(command: list[str], stop: StopRequest, poll_s: float = 1.0, env: dict[str, str] | None = None) -> int:
    """Run `command` in its own process group; on a stop request end the group (torchrun passes
    SIGTERM on to its workers) and return PREEMPTED."""
    proc = subprocess.Popen(command, start_new_session=True, env=env)
    ended = False
    while True:
        try:
            rc = proc.wait(timeout=poll_s)
            break
        except subprocess.TimeoutExpired:
            if stop.requested and not ended:
                print(f"{stop.name}: ending {command[0]}; the requeued job resumes from the newest checkpoint", flush=True)
                os.killpg(proc.pid, signal.SIGTERM)
                ended = True
    return PREEMPTED if ended else rc


# ---------------------------------------------------------------------------------------------
# The local backend (CPU rehearsal)


def run_local(recipe: Recipe, name: str, stop: StopRequest) -> int:
    from smolrecipe.local_train import run_stage  # torch and transformers load only for this backend

    plan = build_plan(recipe)
    plan.checked_stage(name)
    result = run_stage(recipe, plan, name, resume=True, stop=stop)
    print(result.line(), flush=True)
    return PREEMPTED if result.stopped else 0


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}
