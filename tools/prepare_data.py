"""Recipe sources -> tokenized nanoset folders (datatrove), the SFT dataset, the tokenizer folder.

    python tools/prepare_data.py recipes/tiny.yaml                        # every source, local executor
    python tools/prepare_data.py recipes/llama500m.yaml --executor slurm  # the same pipelines as SLURM jobs
    python tools/prepare_data.py recipes/tiny.yaml --source prose --tasks 4 --workers 2
    python tools/prepare_data.py recipes/tiny.yaml --sft                  # chats -> prompt/completion records
    python tools/prepare_data.py recipes/tiny.yaml --all                  # the sources, then the SFT records
    python tools/prepare_data.py recipes/tiny.yaml --build-tokenizer      # tokenizer folder only (base or trained + chat template)
    python tools/prepare_data.py recipes/llama500m.yaml --plan [--json]   # what it will take, before any work

Each source is read only as far as its token budget: what the recipe's stages draw from it plus a
5% margin (smolrecipe/recipe/budgets.py), or the source's own `max_tokens` / `budget_fraction`.
Sources run side by side, and each source's datatrove tasks share the --workers processes.

Each source becomes <paths.data>/<recipe>/<source>/ (.ds + .index + .metadata + manifest.json),
published only when complete. Rerunning skips finished sources and finished datatrove tasks, so an
interrupted run resumes to the same result. Every source is checked (path, fields, filter
arguments, tokenizer) before anything is written.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from smolrecipe import cli
from smolrecipe.data.data_plan import TOKENS_PER_CORE_SECOND, TOKENS_PER_TASK, data_plan, default_tasks
from smolrecipe.data.needle_source import build_needle_source
from smolrecipe.data.pipeline import (
    clear_stale_work,
    document_end_token,
    executors,
    is_published,
    plan_jobs,
    read_manifest,
    tokenizer_folder,
)
from smolrecipe.data.sources import check_source, hub_shards
from smolrecipe.data.tokenizer import build_tokenizer, load_tokenizer
from smolrecipe.errors import UserError
from smolrecipe.kinds import kind_of
from smolrecipe.preemption import PREEMPTED
from smolrecipe.recipe.budgets import BUDGET_MARGIN, source_budgets
from smolrecipe.recipe.envpaths import resolve_recipe
from smolrecipe.recipe.loading import load_recipe
from smolrecipe.recipe.plan import build_plan, source_folder
from smolrecipe.recipe.schema import Recipe
from smolrecipe.report.preflight import human


@cli.command()
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", help="recipe YAML, e.g. recipes/tiny.yaml")
    parser.add_argument("--source", action="append", metavar="NAME", help="only this source (repeatable; default: all)")
    parser.add_argument("--executor", choices=("local", "slurm"), default="local",
                        help="datatrove executor: this machine, or SLURM jobs with the recipe's cluster settings")
    parser.add_argument("--tasks", type=int, help="datatrove tasks per source (default: one per "
                                                   f"{TOKENS_PER_TASK:,} tokens of its budget, at most one per input file)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes for all sources together (local executor; default: every CPU)")
    parser.add_argument("--no-budget", action="store_true",
                        help="read every source to its end, ignoring the token budgets (small local sets, benchmarks)")
    parser.add_argument("--plan", action="store_true", help="print the data plan (budgets, tasks, estimates) and stop")
    parser.add_argument("--json", action="store_true", help="with --plan: one JSON object per source instead of a table")
    parser.add_argument("--sft", "--stage-data", dest="stage_data", action="store_true",
                        help="prepare the datasets of the stages that have their own (SFT chats) instead of the sources")
    parser.add_argument("--all", action="store_true", help="the pretraining sources, then the stages' own datasets")
    parser.add_argument("--build-tokenizer", action="store_true", help="only build the tokenizer folder")
    args = parser.parse_args(argv)
    # The worker processes are the parallelism; the tokenizers library's own thread pool on top of
    # them oversubscribes the CPUs, and in a single process it ran 4x slower (bench/prepare_data.py).
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    console = Console(width=160, soft_wrap=True, highlight=False)
    with cli.blame(args.recipe):
        recipe = resolve_recipe(load_recipe(args.recipe))
        if args.tasks is not None and args.tasks < 1:
            raise UserError("--tasks", f"{args.tasks} is not a positive number of tasks", "use --tasks 1 or more")
        if args.plan:
            return print_plan(recipe, args, console)
        if args.executor == "slurm" and shutil.which("sbatch") is None:
            raise UserError("--executor", "slurm needs `sbatch`, which is not on this machine's PATH",
                              "run on a SLURM login node, or use --executor local")
        folder, built = build_tokenizer(recipe, say=console.print)
        console.print(f"tokenizer: {folder} ({'built' if built else 'up to date'})")
        if args.build_tokenizer:
            return 0
        if args.stage_data:
            return prepare_stage_data(recipe, console, required=True)
        status = prepare_sources(recipe, args, console)
        if args.all and status == 0:
            status = prepare_stage_data(recipe, console, required=False)
        return status


def prepare_sources(recipe: Recipe, args, console: Console) -> int:
    names = checked_names(recipe, args.source)
    budgets = source_budgets(build_plan(recipe))
    unused = [n for n in names if budgets[n].budget == 0]
    for name in unused:
        console.print(f"{name}: no stage draws from it; skipped")
    names = [n for n in names if n not in unused]
    tokenizer = load_tokenizer(tokenizer_folder(recipe)).backend_tokenizer
    document_end = document_end_token(recipe, tokenizer)
    for name in names:  # needle documents are written first: from here on they are a local source like any other
        if recipe.sources[name].needles is not None:
            build_needle_source(recipe, name, budgets[name].budget, say=console.print)
    for name in names:  # every check first: a bad source stops the run before any output exists
        check_source(name, recipe.sources[name])

    start = time.time()
    jobs = []
    for name in names:
        source, budget = recipe.sources[name], budgets[name].budget
        shards = (hub_shards(source) or (source.card.files if source.card else None)) if source.hf is not None else None
        tasks = args.tasks or source.tasks or default_tasks(source, None if args.no_budget else budget, shards)
        (job,) = plan_jobs(recipe, [name], tasks, {} if args.no_budget else {name: budget})
        if is_published(job):
            console.print(f"{name}: up to date ({job.final})")
            continue
        if clear_stale_work(job):
            console.print(f"{name}: {job.final} no longer matches its manifest; preparing it again")
        jobs.append(job)
    workers = share_workers(jobs, args.workers)
    for job in jobs:
        budget = "no budget (read whole)" if job.budget is None else f"budget {job.budget:,} tokens"
        console.print(f"{job.name}: {budget}, {job.tasks} task(s) on {workers[job.name]} worker(s) -> {job.final}")
    run_all(recipe, jobs, document_end, args.executor, workers)
    if args.executor == "slurm":
        console.print(f"submitted the pipelines of {len(jobs)} source(s); each publishes its folder when its last job ends")
        return 0
    print_summary(recipe, names, console, time.time() - start)
    return 0


def checked_names(recipe: Recipe, wanted: list[str] | None) -> list[str]:
    names = wanted or list(recipe.sources)
    unknown = [n for n in names if n not in recipe.sources]
    if unknown:
        raise UserError("--source", f"'{unknown[0]}' is not a source of {recipe.name}", f"use one of {list(recipe.sources)}")
    return names


def share_workers(jobs: list, workers: int) -> dict[str, int]:
    """Split the worker processes between the sources in proportion to their tasks (at least one each,
    never more than a source has tasks)."""
    total = sum(job.tasks for job in jobs) or 1
    return {job.name: max(1, min(job.tasks, round(workers * job.tasks / total))) for job in jobs}


def run_source(recipe: Recipe, job, document_end: str, executor: str, workers: int) -> str:
    chain = executors(recipe, job, document_end, executor, workers)
    chain[-1].run()  # runs (local) or submits (slurm) the whole dependency chain
    return job.name


def run_all(recipe: Recipe, jobs: list, document_end: str, executor: str, workers: dict[str, int]) -> None:
    """Each source's chain; side by side in processes of their own when there are several to run locally."""
    if executor == "slurm" or len(jobs) <= 1 or sum(workers.values()) <= 1:
        for job in jobs:
            run_source(recipe, job, document_end, executor, workers[job.name])
        return
    import multiprocessing
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    with ProcessPoolExecutor(len(jobs), mp_context=multiprocessing.get_context("fork")) as pool:
        futures = [pool.submit(run_source, recipe, job, document_end, executor, workers[job.name]) for job in jobs]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for future in done:
            future.result()  # the first failure, as raised in its process (a UserError stays one line)


def print_plan(recipe: Recipe, args, console: Console) -> int:
    names, run_plan = checked_names(recipe, args.source), build_plan(recipe)
    plans = data_plan(run_plan, names, progress=lambda line: None if args.json else console.print(f"  sampled {line}"))
    if args.json:
        print(json.dumps([p.as_json() for p in plans], indent=1))
        return 0
    stages = [s.name for s in run_plan.stages if s.reads_sources]
    table = Table(title=f"{recipe.name}: data plan (budget = drawn x {BUDGET_MARGIN} unless the source overrides it)",
                  title_justify="left")
    for col in ("source", *stages, "drawn", "budget", "epochs", "tasks", "documents", "GB", "CPU-h", "estimate from"):
        table.add_column(col, justify="left" if col in ("source", "estimate from") else "right")
    for p in plans:
        table.add_row(p.source, *[human(p.tokens_needed[s]) if p.tokens_needed.get(s) else "-" for s in stages],
                      human(p.tokens_drawn), f"{human(p.tokens_budget)} ({p.budget_basis})", f"{p.epochs:.2f}", str(p.tasks),
                      "?" if p.documents is None else human(p.documents), "?" if p.gigabytes is None else f"{p.gigabytes:,.1f}",
                      "?" if p.cpu_hours is None else f"{p.cpu_hours:,.1f}", p.estimate_basis)
    console.print(table)
    for p in plans:
        console.print(f"  {p.source}: estimates from {p.estimate_basis}: {p.note}")
    tokens = sum(p.tokens_budget for p in plans)
    gb = sum(p.gigabytes or 0 for p in plans)
    cpu = sum(p.cpu_hours or 0 for p in plans)
    console.print(f"plan: {len(plans)} source(s), {human(tokens)} tokens to prepare ({tokens:,}), ~{gb:,.1f} GB to read, "
                  f"~{cpu:,.1f} CPU-hours at {TOKENS_PER_CORE_SECOND:,} tokens/s per core, {sum(p.tasks for p in plans)} tasks")
    return 0


def print_summary(recipe: Recipe, names: list[str], console: Console, seconds: float) -> None:
    table = Table(title=f"{recipe.name}: nanoset folders", title_justify="left")
    for col in ("source", "read", "lost", "filtered out", "duplicates", "kept", "tokens", "budget", "files", "folder"):
        table.add_column(col, justify="left" if col in ("source", "folder") else "right")
    total_tokens = total_docs = total_lost = 0
    for name in names:
        folder = source_folder(recipe, name)
        m = read_manifest(folder)
        filtered = sum(f["removed"] for f in m["filters"])
        lost = sum(m.get("lost", {}).values())
        reasons = ", ".join(f"{n:,} {reason.replace('_', ' ')}" for reason, n in m.get("lost", {}).items() if n)
        budget = "-" if m.get("budget") is None else (
            f"{m['tokens'] / m['budget']:.1%} of {human(m['budget'])}" + (" (ran out)" if m["exhausted"] else ""))
        lost_cell = f"{lost:,}" + (f" ({reasons})" if reasons else "")
        table.add_row(name, f"{m['documents_read']:,}", lost_cell, f"{filtered:,}", f"{m['duplicates_removed']:,}",
                      f"{m['documents_kept']:,}", f"{m['tokens']:,}", budget, str(len(m["files"])), folder)
        total_tokens += m["tokens"]
        total_docs += m["documents_kept"]
        total_lost += lost
    console.print(table)
    console.print(f"data: {len(names)} source(s), {total_docs:,} documents, {human(total_tokens)} tokens "
                  f"({total_tokens:,}), {total_lost:,} records unreadable, ready under {Path(recipe.paths.data) / recipe.data_name} "
                  f"in {seconds:.1f}s")


def prepare_stage_data(recipe: Recipe, console: Console, required: bool) -> int:
    """Each stage's own dataset, by its kind (SFT: chats -> prompt/completion records). `required`
    (--sft) makes a recipe without any an error; --all just has nothing more to do."""
    prepared = [stage.name for stage in recipe.stages if kind_of(stage.kind).prepare_data(recipe, stage, console.print)]
    if required and not prepared:
        raise UserError("--sft", f"no stage of {recipe.name} has a dataset of its own (e.g. `kind: sft`)",
                        "drop --sft; the pretraining stages read the sources")
    return 0


def stop_on_signal() -> None:
    """In a SLURM job: SIGUSR1 (the warning before the time limit, forwarded by slurm/common.sh) or
    SIGTERM ends every worker process of this run and exits PREEMPTED, so the job requeues itself;
    the datatrove tasks that finished are kept and the next run does only the rest. The run leads a
    process group of its own so that no worker outlives it (a worker would race the requeued job)."""
    if "SLURM_JOB_ID" not in os.environ:
        return  # at a terminal, Ctrl-C reaches every process of the foreground group already
    leader = os.getpid()
    try:
        os.setpgid(0, 0)
    except OSError:
        pass

    def stop(signum, frame) -> None:
        if os.getpid() != leader:  # a forked worker, which inherited this handler
            os._exit(128 + signum)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.killpg(os.getpgrp(), signal.SIGTERM)
        print(f"prepare_data: {signal.Signals(signum).name}: stopped; finished datatrove tasks are kept, "
              "the next run does the rest", file=sys.stderr, flush=True)
        os._exit(PREEMPTED)

    for signum in (signal.SIGUSR1, signal.SIGTERM):
        signal.signal(signum, stop)


if __name__ == "__main__":
    stop_on_signal()
    sys.exit(main())
