"""Recipe sources -> tokenized nanoset folders (datatrove), the SFT dataset, the tokenizer folder.

    python tools/prepare_data.py recipes/tiny.yaml                        # every source, local executor
    python tools/prepare_data.py recipes/llama500m.yaml --executor slurm  # the same pipelines as SLURM jobs
    python tools/prepare_data.py recipes/tiny.yaml --source prose --tasks 4 --workers 2
    python tools/prepare_data.py recipes/tiny.yaml --sft                  # chats -> prompt/completion records
    python tools/prepare_data.py recipes/tiny.yaml --all                  # the sources, then the SFT records
    python tools/prepare_data.py recipes/tiny.yaml --build-tokenizer      # base tokenizer + chat template only

Each source becomes <paths.data>/<recipe>/<source>/ (.ds + .index + .metadata + manifest.json),
published only when complete. Rerunning skips finished sources and finished datatrove tasks, so an
interrupted run resumes to the same result. Every source is checked (path, fields, filter
arguments, tokenizer) before anything is written.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from smolrecipe import cli
from smolrecipe.data.pipeline import (
    document_end_token,
    executors,
    is_published,
    plan_jobs,
    read_manifest,
    tokenizer_folder,
)
from smolrecipe.data.sources import check_source, matching_files
from smolrecipe.data.tokenizer import build_tokenizer, load_tokenizer
from smolrecipe.errors import UserError
from smolrecipe.kinds import kind_of
from smolrecipe.recipe.envpaths import resolve_recipe
from smolrecipe.recipe.loading import load_recipe
from smolrecipe.recipe.plan import source_folder
from smolrecipe.recipe.schema import Recipe
from smolrecipe.report.preflight import human


@cli.command()
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", help="recipe YAML, e.g. recipes/tiny.yaml")
    parser.add_argument("--source", action="append", metavar="NAME", help="only this source (repeatable; default: all)")
    parser.add_argument("--executor", choices=("local", "slurm"), default="local",
                        help="datatrove executor: this machine, or SLURM jobs with the recipe's cluster settings")
    parser.add_argument("--tasks", type=int, help="datatrove tasks per source (default: one per input file for local "
                                                   "sources, 1 for hub datasets locally, 32 on SLURM)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="tasks run at once (local executor)")
    parser.add_argument("--sft", "--stage-data", dest="stage_data", action="store_true",
                        help="prepare the datasets of the stages that have their own (SFT chats) instead of the sources")
    parser.add_argument("--all", action="store_true", help="the pretraining sources, then the stages' own datasets")
    parser.add_argument("--build-tokenizer", action="store_true", help="only build the tokenizer folder")
    args = parser.parse_args(argv)
    console = Console(width=160, soft_wrap=True, highlight=False)
    with cli.blame(args.recipe):
        recipe = resolve_recipe(load_recipe(args.recipe))
        if args.tasks is not None and args.tasks < 1:
            raise UserError("--tasks", f"{args.tasks} is not a positive number of tasks", "use --tasks 1 or more")
        if args.executor == "slurm" and shutil.which("sbatch") is None:
            raise UserError("--executor", "slurm needs `sbatch`, which is not on this machine's PATH",
                              "run on a SLURM login node, or use --executor local")
        folder, built = build_tokenizer(recipe)
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
    names = args.source or list(recipe.sources)
    unknown = [n for n in names if n not in recipe.sources]
    if unknown:
        raise UserError("--source", f"'{unknown[0]}' is not a source of {recipe.name}", f"use one of {list(recipe.sources)}")
    tokenizer = load_tokenizer(tokenizer_folder(recipe)).backend_tokenizer
    document_end = document_end_token(recipe, tokenizer)
    for name in names:  # every check first: a bad source stops the run before any output exists
        check_source(name, recipe.sources[name])

    start = time.time()
    for name in names:
        tasks = args.tasks or default_tasks(recipe, name, args.executor)
        (job,) = plan_jobs(recipe, [name], tasks)
        if is_published(job):
            console.print(f"{name}: up to date ({job.final})")
            continue
        chain = executors(recipe, job, document_end, args.executor, args.workers)
        console.print(f"{name}: {len(chain) - 1} datatrove step(s), {tasks} task(s) -> {job.final}")
        chain[-1].run()  # runs (local) or submits (slurm) the whole dependency chain
    if args.executor == "slurm":
        console.print(f"submitted the pipelines of {len(names)} source(s); each publishes its folder when its last job ends")
        return 0
    print_summary(recipe, names, console, time.time() - start)
    return 0


def default_tasks(recipe: Recipe, name: str, executor: str) -> int:
    source = recipe.sources[name]
    if source.path is not None:
        return max(1, len(matching_files(source.path)))  # datatrove shards local sources by file
    return 32 if executor == "slurm" else 1


def print_summary(recipe: Recipe, names: list[str], console: Console, seconds: float) -> None:
    table = Table(title=f"{recipe.name}: nanoset folders", title_justify="left")
    for col in ("source", "read", "filtered out", "duplicates", "kept", "tokens", "files", "folder"):
        table.add_column(col, justify="left" if col in ("source", "folder") else "right")
    total_tokens = total_docs = 0
    for name in names:
        folder = source_folder(recipe, name)
        m = read_manifest(folder)
        filtered = sum(f["removed"] for f in m["filters"])
        table.add_row(name, f"{m['documents_read']:,}", f"{filtered:,}", f"{m['duplicates_removed']:,}",
                      f"{m['documents_kept']:,}", f"{m['tokens']:,}", str(len(m["files"])), folder)
        total_tokens += m["tokens"]
        total_docs += m["documents_kept"]
    console.print(table)
    console.print(f"data: {len(names)} source(s), {total_docs:,} documents, {human(total_tokens)} tokens "
                  f"({total_tokens:,}) ready under {Path(recipe.paths.data) / recipe.name} in {seconds:.1f}s")


def prepare_stage_data(recipe: Recipe, console: Console, required: bool) -> int:
    """Each stage's own dataset, by its kind (SFT: chats -> prompt/completion records). `required`
    (--sft) makes a recipe without any an error; --all just has nothing more to do."""
    prepared = [stage.name for stage in recipe.stages if kind_of(stage.kind).prepare_data(recipe, stage, console.print)]
    if required and not prepared:
        raise UserError("--sft", f"no stage of {recipe.name} has a dataset of its own (e.g. `kind: sft`)",
                        "drop --sft; the pretraining stages read the sources")
    return 0


if __name__ == "__main__":
    sys.exit(main())
