"""Score a checkpoint with lighteval: tier 2 (perplexity), tier 3 (multiple choice), tier 4 (SFT
prompt suite), GSM8K, closed-book QA about the demo world (`world`), or the CPU-sized `quick`
subset. Suites are defined in eval/suites.yaml.

    python tools/run_eval.py runs/tiny/sft/local/checkpoint-256 --suite quick
    python tools/run_eval.py $SCRATCH/ckpt/llama500m/stage3/12000 --suite tier3   # nanotron, converted on the fly
    python tools/run_eval.py HuggingFaceTB/SmolLM2-135M-Instruct --suite tier3 --tasks mc:piqa --limit 500
    python tools/run_eval.py --recipe recipes/tiny.yaml     # every stage's final checkpoint, its eval_suites
    python tools/run_eval.py --recipe recipes/llama500m.yaml --backend nanotron   # the cluster run's checkpoints

CHECKPOINT is a transformers folder, a nanotron checkpoint (<checkpoints>/<step>) or a model id.
Results go to <output-dir>/<suite>.json; by default next to the run
(runs/<recipe>/eval/<stage>/step-<N>/) for a local-backend checkpoint, else results/<run>/<step>/.
With --recipe, each stage's final checkpoint (local backend, or nanotron's with --backend nanotron)
is scored with the suites the recipe lists for that stage (`eval_suites`), results beside the run;
results already there for the same checkpoint are kept.
Local copies of benchmarks are used where eval/suites.yaml's local_copies folders have them
(or --local NAME=PATH); everything else is read from the hub, except in a suite with `hub: skip`
(quick), which skips such a task with a one-line note, also recorded in the results.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runs from a checkout without install

from smolrecipe import cli  # noqa: E402
from smolrecipe.errors import UserError  # noqa: E402
from smolrecipe.eval.runner import as_hf_folder, default_output_dir, run_suite, up_to_date  # noqa: E402
from smolrecipe.recipe.suites import expand_suite, load_suites, suite_names  # noqa: E402


def pairs(values: list[str], flag: str) -> dict[str, str]:
    out = {}
    for value in values:
        name, sep, target = value.partition("=")
        if not sep or not name or not target:
            raise UserError(flag, f"'{value}' is not NAME=VALUE", f"write it as {flag} piqa=/data/piqa")
        out[name] = target
    return out


@cli.command()
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", metavar="CHECKPOINT", nargs="?")
    parser.add_argument("--recipe", help="score every stage of this recipe's run with its eval_suites")
    parser.add_argument("--backend", choices=("local", "nanotron"), default="local",
                        help="with --recipe: the local backend's checkpoints (default) or nanotron's")
    parser.add_argument("--suite", help=f"one of {', '.join(suite_names())} (default: quick; with --recipe, the recipe's)")
    parser.add_argument("--tasks", help="comma-separated subset of the suite's tasks, e.g. mc:piqa,mc:hellaswag")
    parser.add_argument("--limit", type=int, help="items per task (default: the suite's)")
    parser.add_argument("--output-dir", type=Path, help="where <suite>.json goes")
    parser.add_argument("--slice", action="append", default=[], metavar="NAME=SOURCE", help="a tier-2 slice from a file or hub id")
    parser.add_argument("--local", action="append", default=[], metavar="TASK=PATH", help="a local copy of a benchmark")
    parser.add_argument("--chat", action=argparse.BooleanOptionalAction, default=None,
                        help="prompt GSM8K through the chat template (default: for SFT checkpoints)")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be >= 1")
    if (args.checkpoint is None) == (args.recipe is None):
        parser.error("give a CHECKPOINT or --recipe RECIPE (one of the two)")
    with cli.blame(args.recipe):
        suites, raw = load_suites()
        slices, local = pairs(args.slice, "--slice"), pairs(args.local, "--local")
        jobs = (recipe_jobs(args.recipe, args.suite, args.backend) if args.recipe
                else [(args.checkpoint, args.suite or "quick", None)])
        for checkpoint, suite_name, run_out in jobs:
            chosen = expand_suite(suite_name, suites)
            with tempfile.TemporaryDirectory(prefix="smolrecipe-ckpt-") as tmp, as_hf_folder(checkpoint, Path(tmp)) as (hf, prov):
                out_dir = args.output_dir or run_out or default_output_dir(prov, hf)
                for suite in chosen:
                    if args.recipe and up_to_date(out_dir / f"{suite.name}.json", prov, suite, args.limit, raw, slices, local):
                        print(f"{suite.name} on {checkpoint}: up to date ({out_dir / f'{suite.name}.json'})")
                        continue
                    tasks = [t for t in args.tasks.split(",") if t] if args.tasks else None
                    result = run_suite(hf, prov, suite, raw, out_dir, tasks=tasks, limit=args.limit, slices=slices, local=local,
                                       chat=args.chat, batch_size=args.batch_size)
                    print_result(result)
    return 0


def recipe_jobs(recipe_path: str, suite: str | None, backend: str) -> list[tuple[str, str, Path]]:
    """(final checkpoint, suite, results folder) for every stage of the recipe's run, in training
    order. Results go beside the run, <runs>/<recipe>/eval/<stage>/step-<N>/, for either backend."""
    from smolrecipe.backends import backend as backend_named
    from smolrecipe.recipe.envpaths import resolve_recipe
    from smolrecipe.recipe.loading import load_recipe
    from smolrecipe.recipe.plan import build_plan
    from smolrecipe.runs import results_dir, run_dir

    trained_by = backend_named(backend)
    recipe = resolve_recipe(load_recipe(recipe_path))
    suites_of = {s.name: s.eval_suites for s in recipe.stages}
    jobs, untrained = [], []
    for stage in build_plan(recipe).stages:
        names = [suite] if suite else suites_of[stage.name]
        if not names:
            continue
        try:
            checkpoint = trained_by.final_checkpoint(recipe, stage, recipe_path)
        except UserError as err:  # a run in progress, or a branch trained by another command (make midtrain)
            untrained.append(err)
            continue
        out = results_dir(Path(run_dir(recipe)), stage.name, stage.train_steps)
        jobs += [(str(checkpoint), name, out) for name in names]
    if untrained and not jobs:
        raise untrained[0]
    for err in untrained:
        print(f"{err.field}: not scored, not trained yet ({err.fix})")
    return jobs


def print_result(result) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for col in ("task", "n", "metric", "value"):
        table.add_column(col, justify="right" if col in ("n", "value") else "left")
    for task, metrics in result.data["tasks"].items():
        flat = {f"{k}.{sub}" if isinstance(v, dict) else k: subv
                for k, v in metrics.items() for sub, subv in (v.items() if isinstance(v, dict) else [(None, v)])}
        for i, (name, value) in enumerate((k, v) for k, v in flat.items() if k != "n" and not k.endswith("_stderr")):
            shown = f"{value:.4f}" if isinstance(value, float) else str(value)
            table.add_row(task if i == 0 else "", str(metrics["n"]) if i == 0 else "", name, shown)
    console = Console(width=160, highlight=False)
    console.print(f"{result.data['suite']} on {result.data['checkpoint']}", markup=False)
    console.print(table)
    console.print(result.line(), markup=False)


if __name__ == "__main__":
    sys.exit(main())
