"""A recipe's run as a SLURM dependency chain: data prep -> stage1 -> ... -> sft -> eval.

Each job is one script of slurm/ (named after the stage), submitted with the recipe's cluster
settings as sbatch flags (flags override the scripts' #SBATCH defaults) and `--dependency=afterok`
on the job before it, so a stage starts only when the previous one finished, and a failed one
cancels the rest (`--kill-on-invalid-dep`). A requeued job (preemption, time limit) keeps its id,
so the chain waits for it.

The data job is CPU-only, with settings of its own (`cluster.data_job`: partition, time, CPUs,
memory). Where the hub is reachable decides where it runs: `hub: online`, as the chain's first
job, with the hub reachable (every other job runs offline); `hub: login`, not as a job at all: the
user prepares the data on the login node and the chain starts at the first training stage, once
every folder it reads has its manifest.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from smolrecipe import PROJECT_ROOT
from smolrecipe.data.verify import MANIFEST, read_manifest
from smolrecipe.errors import UserError
from smolrecipe.recipe.plan import build_plan
from smolrecipe.recipe.schema import Recipe

PREPARE, EVAL = "prepare_data", "eval"
EVAL_CPUS = 8  # lighteval on one GPU needs a few data-loading cores, not the training job's 32
HUB_PROBE_S = 20  # how long the data job waits for the hub before saying it is unreachable


@dataclass(frozen=True)
class Job:
    name: str  # prepare_data, a stage name, or eval
    script: Path
    flags: tuple[str, ...]  # sbatch flags from the recipe, without the dependency

    def command(self, recipe_path: Path, after: str | None) -> list[str]:
        dependency = (f"--dependency=afterok:{after}", "--kill-on-invalid-dep=yes") if after else ()
        return ["sbatch", "--parsable", *self.flags, *dependency, str(self.script), str(recipe_path)]


def job_names(recipe: Recipe, stages: list[str]) -> list[str]:
    """Every job of the recipe's chain: the data job only where it runs as a job (hub: online)."""
    first = [PREPARE] if recipe.cluster.data_job.hub == "online" else []
    return [*first, *stages, EVAL]


def chain(recipe: Recipe, stages: list[str], backend: str, start: str | None = None,
          root: Path = PROJECT_ROOT, recipe_arg: str = "RECIPE") -> list[Job]:
    """The jobs from `start` (default: the first) to the end, each with its sbatch flags.
    `recipe_arg` is how the user named the recipe (for the commands the errors suggest)."""
    cluster = recipe.cluster
    names = job_names(recipe, stages)
    if start == PREPARE and PREPARE not in names:
        raise UserError("--from", f"{PREPARE} is not a job of {recipe.name}: cluster.data_job.hub is login, so the "
                          "data is prepared on the login node", f"run `python tools/prepare_data.py {recipe_arg} --all` "
                          "there (inside tmux), then submit without --from")
    if start is not None and start not in names:
        raise UserError("--from", f"{start!r} is not a job of {recipe.name}", f"use one of {names}")
    if cluster.nodes != 1:
        raise UserError("cluster.nodes", f"{cluster.nodes} nodes: the job scripts run torchrun on one node",
                          "set cluster.nodes: 1 (the recipe's parallelism must fit one node)")
    processes = recipe.parallelism.world
    if backend == "nanotron" and cluster.gpus_per_node != processes:
        raise UserError("cluster.gpus_per_node", f"{cluster.gpus_per_node} GPU(s), but parallelism dp x tp x pp "
                          f"needs {processes} processes, one per GPU", f"set cluster.gpus_per_node: {processes}, or change parallelism")
    chained = names[names.index(start) if start else 0:]
    if cluster.data_job.hub == "login":  # no data job: the login node prepared the data, or has to
        check_prepared(recipe, [s for s in stages if s in chained], recipe_arg)
    logs = log_dir(recipe, root)
    jobs = []
    for name in chained:
        script = root / "slurm" / f"{name}.sh"
        if not script.is_file():
            raise UserError("stages", f"no job script for {name!r} ({script} does not exist)",
                              f"copy slurm/stage1.sh to slurm/{name}.sh and change the stage it trains")
        flags = [f"--job-name={recipe.name}-{name}", f"--output={logs}/%x-%j.out", *resource_flags(recipe, name, root)]
        jobs.append(Job(name, script, tuple(flags)))
    return jobs


def resource_flags(recipe: Recipe, name: str, root: Path = PROJECT_ROOT) -> list[str]:
    """The sbatch flags of one job: the data job's from cluster.data_job (no GPU), the others'
    from the cluster section (eval: one GPU and a few CPUs)."""
    cluster, data = recipe.cluster, recipe.cluster.data_job
    export = "--export=ALL,SMOLRECIPE_ROOT=" + str(root)
    if name == PREPARE:
        flags = [f"--time={data.time}", f"--nodes={cluster.nodes}", export]
        site = (("partition", data.partition), ("account", data.account or cluster.account), ("qos", data.qos or cluster.qos))
        flags += [f"--{flag}={value}" for flag, value in site if value]
        flags.append(f"--cpus-per-task={data_job_cpus(recipe)}")
        return flags + ([f"--mem={data.mem_gb}G"] if data.mem_gb else [])
    flags = [f"--time={cluster.time}", f"--nodes={cluster.nodes}", export]
    site = (("partition", cluster.partition), ("account", cluster.account), ("qos", cluster.qos))
    flags += [f"--{flag}={value}" for flag, value in site if value]
    if name == EVAL:
        gpus, cpus = min(cluster.gpus_per_node, 1), min(cluster.cpus_per_task, EVAL_CPUS)
    else:
        gpus, cpus = cluster.gpus_per_node, cluster.cpus_per_task
    return [*flags, f"--gpus-per-node={gpus}", f"--cpus-per-task={cpus}"]


def data_job_cpus(recipe: Recipe) -> int:
    return recipe.cluster.data_job.cpus or recipe.cluster.cpus_per_task


# ---------------------------------------------------------------------------------------------
# The hub: prepared folders, and what the data job may reach


def data_folders(recipe: Recipe, stages: list[str] | None = None, hub_only: bool = False) -> dict[str, str]:
    """{what: folder} of the prepared data the given stages (default: all) read: their sources'
    nanoset folders and their own datasets (SFT). `hub_only`: only those read from the hub."""
    folders: dict[str, str] = {}
    for stage in build_plan(recipe).stages:  # the plan's folders: what the configs and backends read
        if stages is not None and stage.name not in stages:
            continue
        for fw in stage.weights:
            if not hub_only or recipe.sources[fw.source].hf is not None:
                folders[fw.source] = fw.folder
        own_data = getattr(recipe.stage(stage.name), "data", None)  # a stage's own dataset (SFT chats)
        if stage.dataset is not None and (not hub_only or (own_data is not None and own_data.hf is not None)):
            folders[stage.name] = stage.dataset
    return folders


def unprepared(recipe: Recipe, stages: list[str] | None = None, hub_only: bool = False) -> dict[str, str]:
    return {what: folder for what, folder in data_folders(recipe, stages, hub_only).items()
            if read_manifest(folder) is None}


def check_prepared(recipe: Recipe, stages: list[str] | None = None, recipe_arg: str = "RECIPE", hub_only: bool = False) -> None:
    """With `hub: login` the chain has no data job: every folder its stages read must be prepared."""
    missing = unprepared(recipe, stages, hub_only)
    if missing:
        shown = ", ".join(f"{what} ({folder})" for what, folder in list(missing.items())[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise UserError("cluster.data_job.hub", f"login (the data is prepared on the login node), but {len(missing)} "
                          f"folder(s) have no {MANIFEST} yet: {shown}{more}",
                          f"on the login node, inside tmux (it runs for hours): python tools/prepare_data.py {recipe_arg} "
                          "--all; then submit again")


def reads_hub(recipe: Recipe) -> bool:
    return bool(data_folders(recipe, hub_only=True))


def hub_access(recipe: Recipe, step: str, in_job: bool, recipe_arg: str = "RECIPE") -> Literal["online", "offline"]:
    """Whether job `step` may reach the hub (slurm/common.sh sets the HF offline variables unless
    this says online). Training and eval jobs: offline. The data job: online with `hub: online`
    (in a job, after checking that the node reaches the hub, when the recipe reads it); with
    `hub: login` online outside SLURM (that is the login node), offline in a job, which can then
    only find its hub data prepared already."""
    if step != PREPARE:
        return "offline"
    data = recipe.cluster.data_job
    if not in_job:
        return "online"
    if data.hub == "login":
        check_prepared(recipe, None, recipe_arg, hub_only=True)
        return "offline"
    if reads_hub(recipe):
        probe_hub(recipe_arg)
    return "online"


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def probe_hub(recipe_arg: str = "RECIPE", timeout: float = HUB_PROBE_S) -> None:
    """Raise a UserError, within `timeout` seconds, when this node gets no answer from the hub (an
    HTTP error status is an answer)."""
    endpoint = hub_endpoint()
    try:
        with urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout):
            pass
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise UserError("cluster.data_job.hub", f"online, but this compute node does not reach {endpoint} ({reason})",
                          "set cluster.data_job.hub: login and run `python tools/prepare_data.py "
                          f"{recipe_arg} --all` on the login node (inside tmux), or give cluster.data_job a "
                          "partition whose nodes reach the hub") from None


def log_dir(recipe: Recipe, root: Path = PROJECT_ROOT) -> Path:
    """<runs>/<recipe>/slurm, a relative runs path taken from the checkout (where the jobs run)."""
    return root / recipe.paths.runs / recipe.name / "slurm"


def submit(jobs: list[Job], recipe_path: Path, cwd: Path = PROJECT_ROOT,
           after: str | None = None) -> list[tuple[Job, str, list[str]]]:
    """sbatch each job after the previous one (the first after job `after`, if given); on a refusal,
    cancel what was submitted and raise."""
    submitted: list[tuple[Job, str, list[str]]] = []
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
