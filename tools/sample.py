"""Answers of the base model, the SFT model and the chat stages after it (preference) to the same fixed prompts.

    python tools/sample.py recipes/tiny.yaml            # -> <paths.runs>/<recipe>/samples.json + a table

The base model is the final checkpoint of the last pretraining stage, the SFT model the final
checkpoint of the SFT stage (and of each preference stage after it, once trained), all from the
local backend (tools/train_local.py). Greedy decoding through the chat template; tools/report.py
puts the table in the run's report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from smolrecipe import cli
from smolrecipe.atomic import write_json
from smolrecipe.backends.local.backend import BACKEND as LOCAL
from smolrecipe.errors import UserError
from smolrecipe.kinds import base_and_chat, is_chat_model
from smolrecipe.recipe.envpaths import resolve_recipe
from smolrecipe.recipe.loading import load_recipe
from smolrecipe.recipe.plan import build_plan
from smolrecipe.runs import SAMPLES, run_dir


@cli.command(cli.interrupted("run the same command again"))
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", help="recipe YAML, e.g. recipes/tiny.yaml")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args(argv)
    with cli.blame(args.recipe):
        recipe = resolve_recipe(load_recipe(args.recipe))
        plan = build_plan(recipe)
        from smolrecipe.eval.samples import DEMO_PROMPTS, answer

        base, sft = base_and_chat(plan.stages)
        if sft is None or base is None:
            raise UserError("stages", f"{recipe.name} has no chat stage (kind: sft) after a base stage to compare with",
                            "add a `kind: sft` stage after the pretraining stages")
        # the chat stages after SFT (preference alignment) answer too, under their stage names, once
        # trained: make demo leaves them to make midtrain, which samples again
        later = []
        for stage in (s for s in plan.stages[plan.index(sft.name) + 1:] if is_chat_model(s.kind)):
            try:
                later.append((stage, LOCAL.final_checkpoint(recipe, stage, args.recipe)))
            except UserError as err:
                print(f"{stage.name}: not sampled, not trained yet ({err.fix})")
        checkpoints = {"base": LOCAL.final_checkpoint(recipe, base, args.recipe),
                       "sft": LOCAL.final_checkpoint(recipe, sft, args.recipe), **{s.name: c for s, c in later}}
        models = {label: answer(checkpoint, DEMO_PROMPTS, args.max_new_tokens) for label, checkpoint in checkpoints.items()}
    out = Path(run_dir(recipe)) / SAMPLES
    write_json(out, {"prompts": list(DEMO_PROMPTS), "models": models})
    table = Table(title=f"{recipe.name}: base ({base.name}) vs SFT" + "".join(f" vs {s.name}" for s, _ in later), show_lines=True)
    for column in ("prompt", *models):
        table.add_column(column, overflow="fold")
    for i, prompt in enumerate(DEMO_PROMPTS):
        table.add_row(prompt, *(models[m]["answers"][i] + (" ⏎" if models[m]["ends_with_eot"][i] else "") for m in models))
    Console().print(table)
    ended = ", ".join(f"{m} {sum(models[m]['ends_with_eot'])}/{len(DEMO_PROMPTS)}" for m in models)
    print(f"samples: {len(DEMO_PROMPTS)} prompts; ended with end-of-turn: {ended} (⏎); wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
