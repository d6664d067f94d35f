"""Train a recipe's stages on this machine (CPU, or one GPU): the local backend.

    python tools/train_local.py recipes/tiny.yaml --stage stage1      # one stage
    python tools/train_local.py recipes/tiny.yaml --stage all         # stage1 -> stage2 -> stage3 -> sft -> ...
    python tools/train_local.py recipes/tiny.yaml --stage all --except long   # all but the context extension
    python tools/train_local.py recipes/tiny.yaml --stage stage2 --resume   # continue from its newest checkpoint

Same data folders, weights, batch, LR schedule and resume chain as the generated nanotron configs;
transformers' Trainer for every kind of stage, on the rows its kind gives (smolrecipe.kinds). Each stage writes
<paths.runs>/<recipe>/<stage>/local/{checkpoint-<step>/, log.jsonl, summary.json}. A finished
stage is skipped; a stage with checkpoints continues only with --resume (or starts over with --restart).
"""

from __future__ import annotations

import argparse
import sys

from smolrecipe import cli
from smolrecipe.recipe.envpaths import resolve_recipe
from smolrecipe.recipe.loading import load_recipe
from smolrecipe.recipe.plan import build_plan


# A stage with checkpoints continues only with --resume: say so, rather than "run it again".
@cli.command(cli.interrupted("run the same command with --resume to continue from the stage's newest checkpoint"))
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", help="recipe YAML, e.g. recipes/tiny.yaml")
    parser.add_argument("--stage", required=True, help="a stage name (stage1, ..., sft) or `all`")
    parser.add_argument("--except", dest="skip", action="append", default=[], metavar="STAGE",
                        help="with --stage all: leave this stage out (repeatable); make demo leaves the context extension to make midtrain")
    parser.add_argument("--resume", action="store_true", help="continue from the stage's newest checkpoint")
    parser.add_argument("--restart", action="store_true", help="delete the stage's local run and train it from the start")
    parser.add_argument("--max-steps", type=int, help=argparse.SUPPRESS)  # stop early (tests, benchmarks)
    args = parser.parse_args(argv)
    with cli.blame(args.recipe):
        recipe = resolve_recipe(load_recipe(args.recipe))
        plan = build_plan(recipe)
        chosen = plan.checked_stage(args.stage, "--stage", also=("all",))
        if args.skip and chosen is not None:
            parser.error("--except goes with --stage all")
        # a stage whose parent is left out and untrained stops there, naming the parent (load_parent)
        skipped = {plan.checked_stage(name, "--except").name for name in args.skip}
        from smolrecipe.backends.local.train import run_stage  # torch/transformers load only once the input is valid

        for name in [s.name for s in plan.stages if s.name not in skipped] if chosen is None else [chosen.name]:
            result = run_stage(recipe, plan, name, resume=args.resume, restart=args.restart, max_steps=args.max_steps,
                               recipe_path=args.recipe)
            print(result.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
