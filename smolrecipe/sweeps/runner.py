"""Running a sweep's variants with the project's own tools: on this machine one after another, or
on SLURM as one chain of jobs per variant.

Locally each variant is `tools/train_local.py VARIANT --stage all --resume` and then
`tools/run_eval.py --recipe VARIANT`, each a process of its own (the same commands a user would
type), with its output in <sweep>/logs/<label>.log and one progress line here. A finished variant
(trained, and scored on that checkpoint) is skipped; an interrupted one resumes from its newest
checkpoint, so a killed sweep continues where it stopped and ends with the same numbers.
The data is prepared once, by the first variant's data step: every variant has the same sources
and budgets.

On SLURM the first variant that is not finished gets the full chain (its data job, when the
recipe's data job runs on a compute node); the others start at their stage, after that data job.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from smolrecipe import PROJECT_ROOT, runs
from smolrecipe.errors import UserError
from smolrecipe.jobs.slurm import chain, log_dir, submit
from smolrecipe.recipe.envpaths import resolve_recipe
from smolrecipe.sweeps.points import Point, point_of
from smolrecipe.sweeps.variants import SweepPlan, Variant, write_variants

LOG_TAIL = 15  # lines of a failed step's log shown in the error


def run_local(plan: SweepPlan, variants: list[Variant], say: Callable[[str], None] = print) -> list[Point]:
    """Train and score every variant that is not done, in order; the points of all of them."""
    write_variants(plan, variants)
    points, prepared = [], False
    for i, variant in enumerate(variants, 1):
        where = f"[{i}/{len(variants)}] {variant.label}"
        point = point_of(plan, variant)
        if point.status == "done":
            say(f"{where}: done before ({_measured(plan, point)})")
            points.append(point)
            continue
        recipe_path = plan.recipe_path(variant)
        log = plan.folder / "logs" / f"{variant.label}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        if not prepared:
            _step(plan, variant, "data", ["tools/prepare_data.py", str(recipe_path)], log)
            prepared = True
        if point.status == "pending":
            size = f"{point.params:,} parameters ({point.non_embedding:,} non-embedding) on {point.tokens:,} tokens"
            if point.stale:  # the spec changed since: its old run answers another question
                say(f"{where}: its folder holds a run of other settings (the spec changed); training it again: {size} ...")
            else:
                say(f"{where}: {'resuming' if _has_checkpoints(plan, variant) else 'training'} {size} ...")
            again = "--restart" if point.stale else "--resume"
            _step(plan, variant, "training", ["tools/train_local.py", str(recipe_path), "--stage", "all", again], log)
        _step(plan, variant, "evaluation", ["tools/run_eval.py", "--recipe", str(recipe_path)], log)
        point = point_of(plan, variant)
        if point.status != "done":
            raise UserError(variant.label, f"trained and scored, but no held-out loss was found for it (log: {log})",
                            f"check the eval suite {plan.sweep.eval_suite!r} in eval/suites.yaml")
        say(f"{where}: {_measured(plan, point)} in {time.monotonic() - started:.0f} s")
        points.append(point)
    return points


def _has_checkpoints(plan: SweepPlan, variant: Variant) -> bool:
    from transformers.trainer_utils import get_last_checkpoint  # what the local trainer resumes from

    folder = runs.local_dir(resolve_recipe(variant.recipe), plan.stage)
    return folder.is_dir() and get_last_checkpoint(str(folder)) is not None


def _step(plan: SweepPlan, variant: Variant, what: str, command: list[str], log: Path) -> None:
    command = [sys.executable, *command]
    with log.open("a") as out:
        out.write(f"\n$ {shlex.join(command)}\n")
        out.flush()
        result = subprocess.run(command, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-LOG_TAIL:])
        if result.returncode in (130, -2):
            raise KeyboardInterrupt
        raise UserError(variant.label, f"{what} failed (exit status {result.returncode}); the end of {log}:\n{tail}\n",
                        f"fix what the log says, then run the sweep again: finished variants are kept "
                        f"(the command was: {shlex.join(command)})")


def _measured(plan: SweepPlan, point: Point) -> str:
    losses = ", ".join(f"{d} {point.loss[d]:.3f}" for d in plan.domains)
    return f"held-out loss {losses} nats/token" + (f", objective {point.objective:.3f}" if len(plan.domains) > 1 else "")


def slurm_jobs(plan: SweepPlan, variants: list[Variant], backend: str) -> list[tuple[Variant, list]]:
    """(variant, its chain of jobs) for every variant that is not done; only the first has the data job."""
    out, first = [], True
    for variant in variants:
        if point_of(plan, variant, backend).status == "done":
            continue
        recipe = resolve_recipe(variant.recipe)  # as tools/submit.py: the jobs' environment must define the paths
        jobs = chain(recipe, [plan.stage], backend, None if first else plan.stage, recipe_arg=str(plan.recipe_path(variant)))
        out.append((variant, jobs))
        first = False
    return out


def submit_slurm(plan: SweepPlan, variants: list[Variant], backend: str, dry_run: bool,
                 say: Callable[[str], None] = print) -> list[str]:
    """Submit (or, dry, print) every pending variant's jobs; the ids submitted."""
    if not dry_run:
        write_variants(plan, variants)
    chains = slurm_jobs(plan, variants, backend)
    data_job, ids = None, []
    for variant, jobs in chains:
        recipe_path = plan.recipe_path(variant)
        if dry_run:
            after = data_job
            for job in jobs:
                say(shlex.join(job.command(recipe_path, after)))
                after = f"<{variant.label}-{job.name}>"
                if job.name == "prepare_data":
                    data_job = after
            continue
        log_dir(resolve_recipe(variant.recipe)).mkdir(parents=True, exist_ok=True)
        submitted = submit(jobs, recipe_path, after=data_job)
        for job, job_id, _ in submitted:
            if job.name == "prepare_data":
                data_job = job_id
            ids.append(job_id)
            say(f"{job_id:>10}  {variant.label:<12} {job.name}")
    return ids
