"""A sweep: one YAML file (sweeps/<name>.yaml) that turns a recipe into small experiments.

    kind: scaling   the stage at several model scales (and token budgets): fit loss against
                    non-embedding parameters, forecast a larger scale before it is trained
    kind: mixture   the stage at one small scale on several domain mixtures (proxies): fit each
                    domain's loss as a function of the mixture, recommend the best one

Each point becomes a variant recipe (smolrecipe.sweeps.variants), checked and run like any recipe.
The schema is strict and every rule is checked at load time, before any variant is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, ValidationError, model_validator

from smolrecipe import PROJECT_ROOT
from smolrecipe.errors import UserError
from smolrecipe.recipe.loading import first_error, read_yaml
from smolrecipe.recipe.schema import SHARE_TOLERANCE, Count, LRSchedule, _Strict

NAME = r"^[a-z0-9][a-z0-9_]*$"


class Scale(_Strict):
    """A model shape: `params` (a target of non-embedding parameters, turned into a shape with the
    base model's proportions), or `hidden_size` + `num_layers` (heads, KV heads and the MLP width
    follow the base's head size, grouping and MLP ratio), or every field of the shape."""

    name: str = Field(pattern=NAME)
    params: Optional[Count] = Field(default=None, gt=0)
    hidden_size: Optional[int] = Field(default=None, gt=0)
    num_layers: Optional[int] = Field(default=None, gt=0)
    num_attention_heads: Optional[int] = Field(default=None, gt=0)
    num_key_value_heads: Optional[int] = Field(default=None, gt=0)
    intermediate_size: Optional[int] = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_way(self) -> "Scale":
        shape = [self.hidden_size, self.num_layers]
        if self.params is not None and any(v is not None for v in (*shape, self.num_attention_heads,
                                                                     self.num_key_value_heads, self.intermediate_size)):
            raise ValueError(f"scale {self.name!r} gives `params` and shape fields; give one of the two")
        if self.params is None and None in shape:
            raise ValueError(f"scale {self.name!r} needs `params`, or `hidden_size` and `num_layers`")
        return self


class Sweep(_Strict):
    name: str = Field(pattern=NAME)
    description: str = ""
    kind: Literal["scaling", "mixture"]
    recipe: str  # the base recipe, relative to the checkout
    stage: str  # the pretraining stage whose variants are trained (from scratch, without replay)
    eval_suite: str  # the held-out loss per domain: a suite with a ppl:<domain> task for every domain
    # Token budgets: scaling, one point per value (several: loss is fitted against N and D);
    # mixture, at most one. Default: the stage's own budget.
    tokens: list[Count] = []
    scales: list[Scale] = []  # scaling: the fitted points; mixture: at most one, the proxies' shape
    holdout: list[Scale] = []  # scaling: trained after the fit, to hold the forecast against
    target: Optional[str] = None  # scaling: the recipe whose model the forecast is for (default: none)
    law: Literal["auto", "power", "saturating", "chinchilla"] = "auto"
    # The parameter count N of the law: non-embedding (Kaplan et al. 2020), or total (Chinchilla;
    # Pearce & Song 2024 trace the two papers' different exponents to this choice at small scale,
    # where the embedding is much of the model, as in the demo's).
    parameters: Literal["non_embedding", "total"] = "non_embedding"
    bootstrap: int = Field(default=1000, ge=0)
    mixtures: list[dict[str, float]] = []  # mixture: the proxies' domain shares
    # The loss the sweep minimises or forecasts: a weighted mean of the domains' held-out losses.
    # Default: scaling, the stage's own domain shares (the loss its mixture trains for); mixture, equal.
    objective: dict[str, float] = {}
    validate_: bool = Field(default=True, alias="validate")  # mixture: train the recommended mixture too
    lr: Optional[LRSchedule] = None  # default: the stage's
    micro_batch_size: Optional[int] = Field(default=None, gt=0)
    grad_accumulation: Optional[int] = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _kind_rules(self) -> "Sweep":
        if self.kind == "scaling":
            if len(self.scales) < 2:
                raise UserError("scales", f"{len(self.scales)} scale(s): a scaling fit needs at least two",
                                "list three or more, e.g. {name: s1, params: 1M}")
            if self.mixtures:
                raise UserError("mixtures", "is a mixture sweep's setting", "remove it, or set kind: mixture")
        else:
            for field in ("holdout", "target"):
                if getattr(self, field):
                    raise UserError(field, "is a scaling sweep's setting", "remove it, or set kind: scaling")
            if len(self.scales) > 1:
                raise UserError("scales", "a mixture sweep trains its proxies at one scale", "give at most one scale")
            if len(self.tokens) > 1:
                raise UserError("tokens", "a mixture sweep trains its proxies on one budget", "give at most one value")
            if len(self.mixtures) < 2:
                raise UserError("mixtures", f"{len(self.mixtures)} mixture(s): nothing to compare",
                                "list the proxies' domain shares, e.g. {web: 0.6, math: 0.2, code: 0.2}")
            for i, mix in enumerate(self.mixtures):
                if any(v < 0 for v in mix.values()) or abs(sum(mix.values()) - 1) > SHARE_TOLERANCE:
                    raise UserError(f"mixtures[{i}]", f"shares {mix} do not sum to 1 (or one is negative)",
                                    "give non-negative shares that sum to 1")
        names = [s.name for s in [*self.scales, *self.holdout]]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise UserError("scales", f"scale name {twice[0]!r} is used twice (scales and holdout name variants)",
                            "give every scale its own name")
        if len(set(self.tokens)) < len(self.tokens):
            raise UserError("tokens", "a budget is listed twice", "list each budget once")
        if any(w < 0 for w in self.objective.values()) or (self.objective and not sum(self.objective.values())):
            raise UserError("objective", "weights must be non-negative, and not all zero", "e.g. {web: 1, math: 1, code: 1}")
        return self

    def path(self, field: str) -> Path:
        """A recipe path of the sweep (recipe, target), relative to the checkout."""
        value = Path(getattr(self, field))
        return value if value.is_absolute() else PROJECT_ROOT / value


def load_sweep(path: str | Path) -> Sweep:
    path = Path(path)
    if not path.is_file():
        raise UserError("sweep", f"file {path} does not exist", "pass a sweep spec such as sweeps/tiny_scaling.yaml")
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise UserError("sweep", "the top level is not a mapping", "start the file with `name: ...`", str(path))
    try:
        sweep = Sweep.model_validate(data)
    except UserError as err:
        raise err.with_source(str(path)) from None
    except ValidationError as exc:
        raise first_error(exc, str(path), root=Sweep) from None
    for field in ("recipe", "target"):
        if getattr(sweep, field) is not None and not sweep.path(field).is_file():
            raise UserError(field, f"{getattr(sweep, field)} does not exist", "give a recipe path relative to the checkout, "
                            "e.g. recipes/tiny.yaml", str(path))
    return sweep
