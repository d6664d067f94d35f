"""The cluster's entry point for a stage TRL trains (kind: preference), one process per GPU:

    torchrun --standalone --nproc_per_node=4 tools/train_preference.py RECIPE preference --init <stage>/init

What slurm/preference.sh runs through tools/run_stage.py (the nanotron backend converts the parent's
final nanotron checkpoint into <stage>/init first). Every rank trains the stage with the local
backend's code (smolrecipe.backends.local.train.run_stage: TRL's trainer, the plan's LR schedule,
whole-or-nothing checkpoints), in the stage's own folder <runs>/<recipe>/<stage>/: checkpoint-<step>/,
log.jsonl, settings.json, summary.json. A stop request (SIGUSR1, or the job's stop file) ends it at a
checkpoint with exit code 75; run again, it resumes from the newest checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runs from a checkout without install

from smolrecipe.preemption import PREEMPTED, StopRequest  # noqa: E402

STOP = StopRequest().install()  # first thing: a signal during the imports below still counts

from smolrecipe import cli  # noqa: E402
from smolrecipe.errors import UserError  # noqa: E402
from smolrecipe.kinds import kind_of  # noqa: E402
from smolrecipe.recipe.envpaths import resolve_recipe  # noqa: E402
from smolrecipe.recipe.loading import load_recipe  # noqa: E402
from smolrecipe.recipe.plan import build_plan  # noqa: E402
from smolrecipe.runs import STOP_FILE, stage_dir  # noqa: E402


@cli.command()
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", help="recipe YAML, e.g. recipes/llama500m.yaml")
    parser.add_argument("stage", help="a stage of a kind TRL trains (preference)")
    parser.add_argument("--init", type=Path, required=True, help="the transformers folder the stage starts from")
    args = parser.parse_args(argv)
    with cli.blame(args.recipe):
        recipe = resolve_recipe(load_recipe(args.recipe))
        plan = build_plan(recipe)
        stage = plan.checked_stage(args.stage)
        if kind_of(stage.kind).engine != "trl":
            raise UserError("stage", f"{stage.name} is a {stage.kind} stage, which nanotron trains",
                            f"run it with tools/run_stage.py {args.recipe} {stage.name}")
        from smolrecipe.backends.local.train import run_stage  # torch, transformers and TRL load here

        out = Path(stage_dir(recipe, stage.name))
        result = run_stage(recipe, plan, stage.name, resume=True, stop=STOP, recipe_path=args.recipe, out=out,
                           parent_folder=args.init, stop_file=out / STOP_FILE)
        print(result.line(), flush=True)
        return PREEMPTED if result.stopped else 0


if __name__ == "__main__":
    sys.exit(main())
