"""A run folder's training logs and evaluation results -> loss.png (loss vs tokens, all stages),
eval_<tier>.png (evaluation vs tokens) and report.md.

    python tools/report.py runs/tiny                   # writes runs/tiny/report.md, runs/tiny/loss.png, ...
    python tools/report.py runs/tiny --out /tmp/tiny   # the same files, elsewhere
    python tools/report.py runs/tiny --recipe recipes/tiny.yaml   # the recipe it was trained with (the default)

Reads each stage's log.jsonl and summary.json as either backend writes them (<RUN_DIR>/<stage>/local/
for the local backend, <RUN_DIR>/<stage>/ for nanotron; smolrecipe.runs),
<RUN_DIR>/samples.json (base vs SFT answers) when it is there, and every
<RUN_DIR>/eval/<stage>/step-<N>/<suite>.json that tools/run_eval.py wrote (an unreadable one is
skipped and counted). Each tier with results gets a plot: eval_tier2.png (perplexity, bits per
byte), eval_tier3.png (multiple choice), eval_tier4.png (SFT prompt suite), eval_gsm8k.png,
eval_world.png (qa:world); the report adds per-tier tables and the base vs SFT evaluation. Rates carry
Wilson 95% intervals, and differences are called better or worse only outside the noise. The
recipe (default recipes/<run folder name>.yaml, used only when the run recorded its hash) gives
the stage mixtures for the check that a stage lowers held-out loss on the domain it upweights.
Each file is written under a temporary name and renamed into place; with no logs at all nothing
is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runs from a checkout without install

from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402
from rich.table import Table  # noqa: E402

from smolrecipe import cli  # noqa: E402
from smolrecipe.report.run_report import NUMERIC_COLUMNS, STAGE_COLUMNS, stage_rows, write_report  # noqa: E402


@cli.command(cli.interrupted("run the same command again"))
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a recipe's run folder, e.g. runs/tiny")
    parser.add_argument("--out", metavar="DIR", help="where to write report.md and the plots (default: RUN_DIR)")
    parser.add_argument("--recipe", metavar="FILE", help="the recipe the run was trained with (default: recipes/<RUN_DIR's name>.yaml)")
    args = parser.parse_args(argv)
    console = Console(width=160, soft_wrap=True, highlight=False)
    with cli.blame(args.run_dir):
        report = write_report(Path(args.run_dir), Path(args.out) if args.out else None, Path(args.recipe) if args.recipe else None)
    console.print(stage_table(report.stages, Path(args.run_dir).resolve().name))
    console.print(report.summary, markup=False)
    return 0


def stage_table(stages, name: str) -> Table:
    table = Table(title=f"{name}: stages", title_justify="left")
    for i, col in enumerate(STAGE_COLUMNS):
        table.add_column(col, justify="right" if i in NUMERIC_COLUMNS else "left")
    for row in stage_rows(stages):
        table.add_row(*(escape(cell) for cell in row))
    return table


if __name__ == "__main__":
    sys.exit(main())
