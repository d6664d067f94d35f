"""Turn a recipe into small experiments and their answer: a scaling forecast, or a data mixture.

    python tools/sweep.py sweeps/tiny_scaling.yaml --dry-run       # the variants, their cost, the jobs; writes nothing
    python tools/sweep.py sweeps/tiny_scaling.yaml --run           # train + score them here, fit, forecast, check it
    python tools/sweep.py sweeps/llama500m_scaling.yaml --run --slurm   # submit the variants' jobs instead
    python tools/sweep.py sweeps/llama500m_scaling.yaml --fit      # fit what is measured, write the result

A sweep spec (sweeps/*.yaml) names a base recipe, the pretraining stage to vary, and its points:
model scales (and token budgets) for `kind: scaling`, domain mixtures for `kind: mixture`. Each
point becomes a variant recipe, <runs>/sweeps/<sweep>/recipes/<label>.yaml, checked like any
recipe and trained from scratch by the project's own tools.

--run here trains and scores the variants that are not finished (an interrupted sweep resumes),
one progress line each, then fits: a scaling sweep writes its forecast for the holdout scales
(forecast.json) before it trains them, then compares; a mixture sweep fits a mixing law per
domain, writes the recommended mixture (recommendation.json), trains it and compares it with the
proxies. --run --slurm submits one chain of jobs per unfinished variant (the data is prepared once);
run --fit when they are done, and --run --slurm again for the holdout scales or the recommended
mixture. Results: sweep.json, report.md and a plot in <runs>/sweeps/<sweep>/.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runs from a checkout without install

from smolrecipe import cli  # noqa: E402
from smolrecipe.errors import UserError  # noqa: E402
from smolrecipe.sweeps.spec import load_sweep  # noqa: E402


@cli.command(cli.interrupted("run the same command again: finished variants are kept and the interrupted one resumes"))
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", help="sweep spec, e.g. sweeps/tiny_scaling.yaml")
    parser.add_argument("--dry-run", action="store_true", help="print the variants, their cost and jobs; write nothing")
    parser.add_argument("--run", action="store_true", help="train and score the unfinished variants, then fit")
    parser.add_argument("--slurm", action="store_true", help="with --run or --dry-run: one SLURM job chain per variant")
    parser.add_argument("--fit", action="store_true", help="fit the measured points and write the result (no training)")
    parser.add_argument("--backend", choices=("local", "nanotron"),
                        help="whose checkpoints the variants are (default: local; with --slurm, $SMOLRECIPE_BACKEND or nanotron)")
    args = parser.parse_args(argv)
    if sum([args.dry_run, args.run, args.fit]) != 1:
        parser.error("give one of --dry-run, --run, --fit")
    backend = args.backend or (os.environ.get("SMOLRECIPE_BACKEND", "nanotron") if args.slurm else "local")
    if args.run and not args.slurm and backend != "local":
        parser.error("--run without --slurm trains here, with the local backend; add --slurm for nanotron")
    with cli.blame(args.spec):
        from smolrecipe.sweeps import flow  # the recipe stack loads only once the arguments are valid
        from smolrecipe.sweeps.variants import plan_sweep

        sweep = load_sweep(args.spec)
        plan = plan_sweep(sweep)
        flow.print_plan(plan, backend)
        if args.dry_run:
            if args.slurm:
                flow.submit(plan, backend, dry_run=True)
            later = " (+ the recommended mixture, after the fit)" if sweep.kind == "mixture" and sweep.validate_ else ""
            print(f"dry run: {len(plan.variants)} variant(s) of {sweep.name}{later}, nothing written")
            return 0
        if args.slurm:
            if shutil.which("sbatch") is None:
                raise UserError("sbatch", "not found on this machine's PATH", "run on a SLURM login node, or pass --dry-run")
            flow.submit(plan, backend, dry_run=False)
            return 0
        started = time.monotonic()
        line = flow.run(plan, train=args.run, backend=backend)
    print(f"{line} ({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
