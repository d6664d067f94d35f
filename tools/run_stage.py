"""Train one stage of a recipe as a cluster job would: what slurm/stage1.sh ... sft.sh run.

    python tools/run_stage.py recipes/llama500m.yaml stage2 --gpus 4            # our nanotron entry point via torchrun
    python tools/run_stage.py recipes/llama500m.yaml stage2 --gpus 4 --dry-run  # write the config, print the command
    python tools/run_stage.py recipes/tiny.yaml stage1 --backend local          # the CPU rehearsal

A stage that already finished is not run again; one with checkpoints of its own continues from
the newest. SIGUSR1 ends the run at a checkpoint with exit code 75, which the batch script answers
by requeueing the job. nanotron writes <runs>/<recipe>/<stage>/config.yaml (the resolved config
the job trains with) and settings.json (recipe hash, stage fingerprint) beside its checkpoints.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runs from a checkout without install

from smolrecipe.preemption import StopRequest  # noqa: E402

STOP = StopRequest().install()  # first thing: a signal during the imports below still counts

from smolrecipe import cli  # noqa: E402
from smolrecipe.backends import BACKENDS  # noqa: E402
from smolrecipe.jobs.stage import run_stage_job  # noqa: E402


@cli.command()
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", help="recipe YAML, e.g. recipes/llama500m.yaml")
    parser.add_argument("stage", help="stage name: stage1, stage2, stage3, sft, ...")
    parser.add_argument("--backend", choices=tuple(BACKENDS), default=os.environ.get("SMOLRECIPE_BACKEND", "nanotron"),
                        help="nanotron on GPUs (default), or the local backend (default from $SMOLRECIPE_BACKEND)")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs on this node = torchrun processes (nanotron)")
    parser.add_argument("--dry-run", action="store_true", help="check the stage (nanotron: write its config) and print the command only")
    args = parser.parse_args(argv)
    with cli.blame(args.recipe):
        return run_stage_job(args.recipe, args.stage, args.backend, args.gpus, STOP, dry_run=args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
