"""What a sweep's variants measured: one row per variant, read from its run folder.

A variant is `done` when its stage finished (summary.json) under its current settings (the stage
fingerprint the trainers compare) and its eval suite scored that very checkpoint (the result's
fingerprint is the summary's); `trained` when only the first holds.
The loss of a domain is the held-out token loss of its tier-2 slice, ln(token perplexity), in
nats per token: the quantity training minimises, comparable across the variants (one tokenizer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smolrecipe import runs
from smolrecipe.backends.nanotron.config import stage_fingerprint
from smolrecipe.recipe.envpaths import resolve_recipe
from smolrecipe.recipe.estimates import count_params, run_cost
from smolrecipe.recipe.plan import build_plan
from smolrecipe.sweeps.variants import SweepPlan, Variant


@dataclass
class Point:
    label: str
    role: str
    recipe: str  # the variant's recipe name
    scale: str | None
    shape: dict[str, int]
    params: int  # total
    non_embedding: int
    tokens: int
    flops: float
    gpu_hours: float | None  # at the recipe's GPU and assumed MFU (None: a CPU recipe)
    mixture: dict[str, float]
    status: str = "pending"  # pending | trained | done
    stale: bool = False  # its folder holds a run of other settings (the spec changed since)
    loss: dict[str, float] = field(default_factory=dict)  # domain -> held-out nats/token
    bits_per_byte: dict[str, float] = field(default_factory=dict)
    objective: float | None = None  # the sweep's weighted mean of `loss`
    final_train_loss: float | None = None
    seconds: float | None = None  # training time

    def n(self, parameters: str) -> int:
        """The parameter count a scaling law uses: "non_embedding" or "total"."""
        return self.non_embedding if parameters == "non_embedding" else self.params

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def point_of(plan: SweepPlan, variant: Variant, backend: str = "local") -> Point:
    """The variant's row, from the folder `backend` trained it in."""
    recipe = resolve_recipe(variant.recipe)
    run_plan = build_plan(recipe)
    stage = run_plan.stages[0]
    count, cost = count_params(recipe), run_cost(run_plan)
    shape = {k: getattr(recipe.model, k) for k in ("hidden_size", "num_layers", "num_attention_heads",
                                                   "num_key_value_heads", "intermediate_size")}
    point = Point(variant.label, variant.role, recipe.name, variant.scale, shape, count.total, count.non_embedding,
                  stage.tokens, cost.flops, cost.gpu_hours, variant.mixture)
    folder = runs.backend_dir(recipe, stage.name, backend)
    fingerprint = stage_fingerprint(run_plan, stage)  # what the trainers themselves compare before reusing a run
    recorded = runs.read_settings(folder) if folder.is_dir() else {}
    point.stale = bool(recorded) and recorded.get("fingerprint") != fingerprint
    summary = runs.read_summary(folder)
    if not summary or summary.get("fingerprint") != fingerprint:
        return point
    point.status, point.final_train_loss, point.seconds = "trained", summary.get("final_loss"), summary.get("seconds")
    scored = runs.results_dir(Path(runs.run_dir(recipe)), stage.name, stage.train_steps) / f"{plan.sweep.eval_suite}.json"
    result = runs.read_json_if_any(scored)
    if result.get("model", {}).get("fingerprint") != summary.get("fingerprint"):
        return point  # not scored yet, or a result of an earlier training
    tasks = result.get("tasks", {})
    if not all(f"ppl:{d}" in tasks for d in plan.domains):
        return point
    point.loss = {d: math.log(tasks[f"ppl:{d}"]["token_ppl"]) for d in plan.domains}
    point.bits_per_byte = {d: tasks[f"ppl:{d}"]["bits_per_byte"] for d in plan.domains}
    point.objective = sum(plan.weights[d] * point.loss[d] for d in plan.domains)
    point.status = "done"
    return point

