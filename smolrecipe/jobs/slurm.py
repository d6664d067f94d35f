"""A recipe's run as a SLURM dependency chain: data prep -> stage1 -> ... -> sft -> eval.

Each job is one script of slurm/ (named after the stage), submitted with the recipe's cluster
settings as sbatch flags (flags override the scripts' #SBATCH defaults) and `--dependency=afterok`
on the job before it, so a stage starts only when the previous one finished, and a failed one
cancels the rest (`--kill-on-invalid-dep`). A requeued job (preemption, time limit) keeps its id,
so the chain waits for it.
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from smolrecipe import PROJECT_ROOT
from smolrecipe.errors import UserError
from smolrecipe.recipe.schema import Recipe

PREPARE, EVAL = "prepare_data", "eval"
EVAL_CPUS = 8  # lighteval on one GPU needs a few data-loading cores, not the training job's 32


@dataclass(frozen=True)
class Job:
    name: str  # prepare_data, a stage name, or eval
    script: Path
    flags: tuple[str, ...]  # sbatch flags from the recipe, without the dependency

    def command(self, recipe_path: Path, after: str | None) -> list[str]:
        dependency = (f"--dependency=afterok:{after}", "--kill-on-invalid-dep=yes") if after else ()
        return ["sbatch", "--parsable", *self.flags, *dependency, str(self.script), str(recipe_path)]


def chain(recipe: Recipe, stages: list[str], backend: str, start: str | None = None,
          root: Path = PROJECT_ROOT) -> list[Job]:
    """The jobs from `start` (default: data prep) to the end, each with its sbatch flags."""
    cluster = recipe.cluster
    names = [PREPARE, *stages, EVAL]
    if start is not None and start not in names:
        raise UserError("--from", f"{start!r} is not a job of {recipe.name}", f"use one of {names}")
    if cluster.nodes != 1:
        raise UserError("cluster.nodes", f"{cluster.nodes} nodes: the job scripts run torchrun on one node",
                          "set cluster.nodes: 1 (the recipe's parallelism must fit one node)")
    processes = recipe.parallelism.world
    if backend == "nanotron" and cluster.gpus_per_node != processes:
        raise UserError("cluster.gpus_per_node", f"{cluster.gpus_per_node} GPU(s), but parallelism dp x tp x pp "
                          f"needs {processes} processes, one per GPU", f"set cluster.gpus_per_node: {processes}, or change parallelism")
    common = [f"--time={cluster.time}", f"--nodes={cluster.nodes}", "--export=ALL,SMOLRECIPE_ROOT=" + str(root)]
    for flag, value in (("partition", cluster.partition), ("account", cluster.account), ("qos", cluster.qos)):
        if value:
            common.append(f"--{flag}={value}")
    logs = log_dir(recipe, root)
    jobs = []
    for name in names[names.index(start) if start else 0:]:
        script = root / "slurm" / f"{name}.sh"
        if not script.is_file():
            raise UserError("stages", f"no job script for {name!r} ({script} does not exist)",
                              f"copy slurm/stage1.sh to slurm/{name}.sh and change the stage it trains")
        if name == PREPARE:
            gpus, cpus = 0, cluster.cpus_per_task
        elif name == EVAL:
            gpus, cpus = min(cluster.gpus_per_node, 1), min(cluster.cpus_per_task, EVAL_CPUS)
        else:
            gpus, cpus = cluster.gpus_per_node, cluster.cpus_per_task
        flags = [f"--job-name={recipe.name}-{name}", f"--output={logs}/%x-%j.out", *common,
                 f"--gpus-per-node={gpus}", f"--cpus-per-task={cpus}"]
        jobs.append(Job(name, script, tuple(flags)))
    return jobs


def log_dir(recipe: Recipe, root: Path = PROJECT_ROOT) -> Path:
    """<runs>/<recipe>/slurm, a relative runs path taken from the checkout (where the jobs run)."""
    return root / recipe.paths.runs / recipe.name / "slurm"


def submit(jobs: list[Job], recipe_path: Path, cwd: Path = PROJECT_ROOT) -> list[tuple[Job, str, list[str]]]:
    """sbatch each job after the previous one; on a refusal, cancel what was submitted and raise."""
    submitted: list[tuple[Job, str, list[str]]] = []
    after = None
    for job in jobs:
        command = job.command(recipe_path, after)
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
        if result.returncode != 0:
            ids = [job_id for _, job_id, _ in submitted]
            if ids:
                subprocess.run(["scancel", *ids], capture_output=True)
            cancelled = f" (cancelled the {len(ids)} job(s) submitted before it: {' '.join(ids)})" if ids else ""
            raise UserError(f"sbatch {job.name}", f"refused: {result.stderr.strip() or result.stdout.strip()}{cancelled}",
                              f"check the recipe's cluster section; the command was: {shlex.join(command)}")
        after = result.stdout.strip().split(";")[0]  # --parsable prints "id" or "id;cluster"
        submitted.append((job, after, command))
    return submitted
