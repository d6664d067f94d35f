"""How many tokens to prepare from each source: what the plan's stages draw from it, plus a margin.

A pretraining stage draws `weight x tokens` from each source it blends (replay included); summed
over the stages that is what the run reads from the source. Preparing exactly that much would
leave a few tokens short, because of what the engine drops before training sees a token:

  - the cap itself lands within CAP_TOLERANCE of its target (it stops between documents);
  - nanotron's Nanoset cuts each folder into samples of sequence_length + 1 tokens, so every
    sample shares a token with the next (1/sequence_length) and the tail of each file is lost;
  - folder weights are rounded to 6 places.

So the budget is the drawn tokens times BUDGET_MARGIN (5%), rounded up to three significant
figures: within [drawn / max_epochs, 1.1 x drawn] as asked, and a budget that does not change
when a stage's token count is nudged by a few steps (the data fingerprint includes the budget, so
a new budget means preparing the source again).

A recipe overrides the plan per source with `max_tokens` (a count) or `budget_fraction` (of the
drawn tokens); an override that would make the stages read the source more than `max_epochs`
times is an error, since that is exactly what the budget exists to prevent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from smolrecipe.errors import UserError
from smolrecipe.recipe.plan import RunPlan

BUDGET_MARGIN = 1.05
CAP_TOLERANCE = 0.02  # the cap's promise: kept tokens within 2% of the budget (tests hold it to that)
SIGNIFICANT_FIGURES = 3


@dataclass(frozen=True)
class SourceBudget:
    source: str
    drawn_by_stage: dict[str, int] = field(default_factory=dict)  # tokens each pretraining stage draws
    budget: int = 0  # tokens to prepare; 0 when no stage reads the source
    basis: str = "plan"  # plan | max_tokens | budget_fraction | unused

    @property
    def drawn(self) -> int:
        return sum(self.drawn_by_stage.values())

    @property
    def epochs(self) -> float:
        """How many times the stages read the prepared tokens if the budget is met."""
        return self.drawn / self.budget if self.budget else 0.0


def round_up(n: float, figures: int = SIGNIFICANT_FIGURES) -> int:
    """`n` rounded up to `figures` significant figures (1,234,567 -> 1,240,000)."""
    if n <= 0:
        return 0
    scale = 10 ** max(0, math.floor(math.log10(n)) + 1 - figures)
    return math.ceil(n / scale) * scale


def drawn_tokens(plan: RunPlan) -> dict[str, dict[str, int]]:
    """source -> stage -> tokens that stage draws from it (pretraining stages, replay included)."""
    out: dict[str, dict[str, int]] = {name: {} for name in plan.recipe.sources}
    for stage in plan.stages:
        for source, tokens in stage.tokens_by("source").items():
            out[source][stage.name] = tokens
    return out


def source_budgets(plan: RunPlan) -> dict[str, SourceBudget]:
    """The token budget of every source of the recipe, in the recipe's order."""
    recipe = plan.recipe
    budgets = {}
    for name, by_stage in drawn_tokens(plan).items():
        source, drawn = recipe.sources[name], sum(by_stage.values())
        if source.max_tokens is not None:
            budget, basis, key = source.max_tokens, "max_tokens", "max_tokens"
        elif source.budget_fraction is not None:
            budget, basis, key = math.ceil(drawn * source.budget_fraction), "budget_fraction", "budget_fraction"
        elif drawn == 0:
            budget, basis, key = 0, "unused", ""
        else:
            budget, basis, key = round_up(drawn * BUDGET_MARGIN), "plan", ""
        if key and drawn and drawn / budget > recipe.max_epochs:
            least = math.ceil(drawn / recipe.max_epochs)
            fix = (f"raise it to at least {least:,}" if key == "max_tokens"
                   else f"raise it to at least {1 / recipe.max_epochs:.3g}") + " (or drop it to let the plan decide), or raise max_epochs"
            raise UserError(f"sources.{name}.{key}",
                            f"{budget:,} tokens would be read {drawn / budget:.1f} times by the stages ({drawn:,} drawn), "
                            f"above max_epochs {recipe.max_epochs:g}", fix)
        budgets[name] = SourceBudget(name, by_stage, budget, basis)
    return budgets
