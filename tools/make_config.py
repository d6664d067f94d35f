"""Recipe -> nanotron configs (one YAML per stage + sft.yaml) and the preflight report.

    python tools/make_config.py recipes/llama500m.yaml                 # configs/llama500m/*.yaml
    python tools/make_config.py recipes/llama500m.yaml --resolve --out $RUN/configs
    python tools/make_config.py recipes/llama500m.yaml --check         # + nanotron's own parser

Committed configs keep `${VAR}` placeholders so they are the same for everyone; `--resolve`
expands them from the environment for a job and refuses an unset variable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from smolrecipe import PROJECT_ROOT, cli
from smolrecipe.backends.nanotron.config import NANOTRON_COMMIT
from smolrecipe.backends.nanotron.generate import (
    check_lr_with_nanotron,
    check_with_nanotron,
    check_with_trl,
    nanotron_available,
    render,
    write_atomically,
)
from smolrecipe.data.verify import verify_prepared
from smolrecipe.errors import UserError
from smolrecipe.recipe.budgets import source_budgets
from smolrecipe.recipe.envpaths import resolve_recipe, unset_variables
from smolrecipe.recipe.estimates import count_params
from smolrecipe.recipe.plan import build_plan
from smolrecipe.report.lr_plan import boundary_lines, plot_planned_lrs
from smolrecipe.report.preflight import SourceUse, data_table, data_usage, data_warnings, human, memory_verdict, print_preflight


def data_uses(rendered, resolved: bool, recipe_path: str = "RECIPE") -> list[SourceUse] | None:
    """Tokens needed vs prepared per stage and source, read from the data manifests; None when the
    data paths use a variable unset here (the data lives on the cluster). Every prepared folder is
    checked against its manifest first, and the model's vocabulary against the tokenizer folder
    (smolrecipe.data.verify): a UserError when one disagrees; a folder not prepared yet is a warning."""
    plan = rendered.plan
    if not resolved:
        try:
            plan = build_plan(resolve_recipe(rendered.recipe))
        except UserError:
            return None
    verify_prepared(plan, recipe_path)
    return data_usage(plan)


@cli.command(cli.interrupted("run the same command again"))
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", help="recipe YAML, e.g. recipes/llama500m.yaml")
    parser.add_argument("--out", type=Path, help="output folder (default: configs/<recipe name> in the checkout)")
    parser.add_argument("--resolve", action="store_true",
                        help="expand ${VAR} paths from the environment (for a job); an unset variable is an error")
    parser.add_argument("--check", action="store_true",
                        help="also load each file with nanotron's get_config_from_file where nanotron is installed")
    parser.add_argument("--quiet", action="store_true", help="no preflight tables, only the summary line")
    parser.add_argument("--lr-plot", type=Path, metavar="PNG", help="also draw the planned LR of every stage on one token axis")
    args = parser.parse_args(argv)
    console = Console(width=160, soft_wrap=True)

    resolved = args.resolve or (args.check and nanotron_available())
    with cli.blame(args.recipe):
        rendered = render(args.recipe, resolve=resolved)
        source_budgets(rendered.plan)  # a budget override below what max_epochs allows: one line, nothing written
        uses = data_uses(rendered, resolved=resolved, recipe_path=args.recipe)  # before writing: a mismatch writes nothing

    plan, recipe = rendered.plan, rendered.recipe
    out = args.out or PROJECT_ROOT / "configs" / recipe.name
    written = write_atomically(rendered.files, out)

    if not args.quiet:
        print_preflight(plan, console)
        from smolrecipe.sweeps.flow import cost_line, sweeps_of

        for sweep in sweeps_of(args.recipe):  # what answering "which size, which mixture" first would cost
            console.print(cost_line(sweep), highlight=False)
    if uses is not None:
        if not args.quiet:
            console.print(data_table(uses, recipe.max_epochs))
        for line in data_warnings(uses, recipe.max_epochs):
            console.print(f"warning: {line}", highlight=False)
    if not (args.resolve or args.check):
        for field, names in unset_variables(recipe).items():
            console.print(f"note: {field} uses ${', $'.join(names)}, unset here; files keep the placeholder "
                          "and a job resolves it (make_config.py --resolve)", highlight=False)

    for line in boundary_lines(plan):  # warmup-stable-decay: where an annealing stage takes over
        console.print(line, highlight=False)
    if args.lr_plot:
        console.print(f"planned LR: {plot_planned_lrs(plan, args.lr_plot)}", highlight=False)

    for name in rendered.resumed:
        console.print(f"note: {name} has checkpoints of its own: it resumes from them (LR schedule and optimizer "
                      "included) instead of starting again from the stage before", highlight=False)

    status = 0
    if args.check:
        trl = check_with_trl(rendered)
        console.print(f"check: all {len(written) - len(trl)} nanotron files match nanotron's schema at commit {NANOTRON_COMMIT[:12]} "
                      "(field names, types, union resolution, __post_init__ rules)", highlight=False)
        for name, verdict in trl:
            console.print(f"check: {name}: {verdict}", highlight=False)
            status = 1 if verdict.startswith("FAILED") else status
        if nanotron_available():
            for name, verdict in check_with_nanotron(rendered) + check_lr_with_nanotron(rendered):
                console.print(f"check: {name}: {verdict}", highlight=False)
                status = 1 if verdict.startswith("FAILED") else status
        else:
            console.print("check: nanotron (with flash-attn) is not importable here, so loading with nanotron's own "
                          "get_config_from_file and comparing its LR scheduler with ours were SKIPPED "
                          "(they run on a node set up by slurm/setup_env.sh, or after make install with ../shared/vendor)",
                          highlight=False)

    pretrain = [s for s in plan.stages if s.reads_sources]
    steps = ", ".join(f"{s.name} {s.train_steps:,}" for s in plan.stages)
    console.print(
        f"{out}: wrote {len(written)} configs (steps: {steps}); "
        f"{human(sum(s.tokens for s in pretrain))} pretraining tokens; "
        f"{human(count_params(recipe).total)} params; "
        f"memory {memory_verdict(plan)}; recipe hash {recipe.hash()}",
        highlight=False,
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
