"""A sweep's points as recipes: the base recipe with one stage, at another scale, budget or mixture.

A variant trains the sweep's stage from scratch (no `init_from`, no replay): its mixture is the
stage's effective one (replay folded in, as the preflight shows it) or the proxy's domain shares,
with each domain's sources in the stage's proportions. Everything else (tokenizer, sequence
length, optimizer, cluster) is the base recipe's, so a variant is checked, rendered, prepared,
trained, evaluated and submitted by the same tools as any recipe. The variants of one sweep share
one prepared copy of the data (`paths.dataset`): every source's budget is the most any of them
draws, so the first variant's data step serves them all.

Variant recipes are written to <runs>/sweeps/<sweep>/recipes/<label>.yaml, their runs go to
<runs>/sweeps/<sweep>/<sweep>-<label>/, the sweep's tables, plots and result beside them.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import yaml

from smolrecipe.atomic import write_file
from smolrecipe.errors import UserError
from smolrecipe.recipe.budgets import BUDGET_MARGIN, round_up
from smolrecipe.recipe.envpaths import resolve_recipe
from smolrecipe.recipe.estimates import count_params
from smolrecipe.recipe.loading import read_yaml, recipe_from_dict
from smolrecipe.recipe.plan import build_plan
from smolrecipe.recipe.schema import ModelSpec, PretrainStage, Recipe
from smolrecipe.recipe.suites import load_suites
from smolrecipe.sweeps.spec import Scale, Sweep

SHAPE_FIELDS = ("hidden_size", "num_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size")
MLP_MULTIPLE = 8  # the MLP width is rounded to a multiple of this
MAX_WIDTH_FACTOR = 64  # a target-size search looks at widths up to this many times the base's
# How much a target-size shape may trade its parameter count for the base's width per layer: a
# shape 2x off the base's proportions costs as much as one 16% off the target.
ASPECT_WEIGHT = 0.25


@dataclass
class Variant:
    label: str  # unique in the sweep: the scale's name, the budget, the proxy's index
    role: str  # "point" (fitted), "holdout" (trained after the fit), "recommended" (the fitted mixture)
    raw: dict  # the recipe as written
    recipe: Recipe  # validated, paths unresolved
    scale: str | None = None
    tokens: int = 0
    mixture: dict[str, float] = field(default_factory=dict)  # domain shares the variant trains on

    @property
    def name(self) -> str:
        return self.recipe.name


@dataclass
class SweepPlan:
    sweep: Sweep
    base: Recipe  # paths unresolved
    stage: str
    domains: list[str]  # the domains the objective weighs, in the eval suite's order
    weights: dict[str, float]  # the objective's normalised weights
    variants: list[Variant]  # points, then holdouts
    budgets: dict[str, int]  # the shared source budgets (max_tokens of every variant)

    @property
    def folder(self) -> Path:
        """<runs>/sweeps/<sweep>, resolved (so an unset variable in paths.runs is an error here)."""
        return Path(resolve_recipe(self.base).paths.runs) / "sweeps" / self.sweep.name

    def recipe_path(self, variant: Variant) -> Path:
        return self.folder / "recipes" / f"{variant.label}.yaml"

    def by_role(self, role: str) -> list[Variant]:
        return [v for v in self.variants if v.role == role]


# ---- shapes ---------------------------------------------------------------------------------------


def shape_for(base: ModelSpec, scale: Scale, base_recipe: Recipe) -> dict[str, int]:
    """The model fields of a scale, keeping the base's head size, query/KV grouping and MLP ratio
    (and, for a `params` target, its width-to-depth ratio), as scaling studies vary one size knob."""
    if scale.params is not None:
        return _shape_for_params(base, scale.params, base_recipe)
    given = {f: getattr(scale, f) for f in SHAPE_FIELDS if getattr(scale, f) is not None}
    return {**_derived_shape(base, given["hidden_size"], given["num_layers"]), **given}


def _derived_shape(base: ModelSpec, hidden: int, layers: int) -> dict[str, int]:
    heads = max(1, round(hidden / base.head_dim))
    group = base.num_attention_heads // base.num_key_value_heads
    kv = max(d for d in range(1, heads + 1) if heads % d == 0 and d <= max(1, heads // group))
    mlp = max(MLP_MULTIPLE, round(hidden * base.intermediate_size / base.hidden_size / MLP_MULTIPLE) * MLP_MULTIPLE)
    return {"hidden_size": hidden, "num_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv,
            "intermediate_size": mlp}


def _shape_for_params(base: ModelSpec, target: int, base_recipe: Recipe) -> dict[str, int]:
    """The shape whose non-embedding parameters come closest to `target` (on a log scale) with a
    width per layer close to the base's: widths are whole numbers of the base's query/KV groups
    (head size and grouping kept exactly), the depth is what reaches the target at that width."""
    aspect = base.hidden_size / base.num_layers
    group = base.num_attention_heads // base.num_key_value_heads
    best, best_score = None, math.inf
    for hidden in range(base.head_dim * group, base.hidden_size * MAX_WIDTH_FACTOR + 1, base.head_dim * group):
        per_layer = non_embedding(base_recipe, _derived_shape(base, hidden, 1))
        for layers in {max(1, math.floor(target / per_layer)), max(1, math.ceil(target / per_layer))}:
            shape = _derived_shape(base, hidden, layers)
            score = abs(math.log(non_embedding(base_recipe, shape) / target)) + ASPECT_WEIGHT * abs(math.log(hidden / layers / aspect))
            if score < best_score:
                best, best_score = shape, score
    return best


def non_embedding(recipe: Recipe, shape: dict[str, int]) -> int:
    return count_params(recipe.model_copy(update={"model": recipe.model.model_copy(update=shape)})).non_embedding


# ---- the plan ---------------------------------------------------------------------------------------


def plan_sweep(sweep: Sweep) -> SweepPlan:
    """Every variant of the sweep (points and holdouts; a mixture sweep's recommended variant comes
    from its fit: `recommended_variant`), validated as recipes, before anything is written."""
    base_path = sweep.path("recipe")
    raw = read_yaml(base_path)
    base = recipe_from_dict(copy.deepcopy(raw), source=str(base_path))
    names = [s.name for s in base.stages]
    if sweep.stage not in names:
        raise UserError("stage", f"{sweep.stage!r} is not a stage of {base.name}", f"use one of {names}")
    stage = base.stage(sweep.stage)
    if not isinstance(stage, PretrainStage):
        raise UserError("stage", f"{sweep.stage!r} is a {stage.kind} stage; a sweep varies a pretraining stage's "
                        "scale or mixture", f"use one of {[s.name for s in base.stages if isinstance(s, PretrainStage)]}")
    stage_mix = effective_mixture(base, stage)
    domains = _suite_domains(sweep, base, stage_mix)
    weights = _objective(sweep, domains, stage_mix)
    default_tokens = build_plan(base).stage(sweep.stage).tokens
    tokens = sweep.tokens or [default_tokens]
    variants = []
    if sweep.kind == "scaling":
        for scale in sweep.scales:
            for budget in tokens:
                label = scale.name if len(tokens) == 1 else f"{scale.name}_{_count_label(budget)}"
                variants.append(_variant(sweep, raw, base, label, "point", scale, budget, None))
        for scale in sweep.holdout:
            variants.append(_variant(sweep, raw, base, scale.name, "holdout", scale, max(tokens), None))
    else:
        scale = sweep.scales[0] if sweep.scales else None
        for i, mix in enumerate(sweep.mixtures):
            variants.append(_variant(sweep, raw, base, f"mix{i + 1}", "point", scale, tokens[0], mix))
    budgets = _shared_budgets(variants)
    for v in variants:
        _set_budgets(v, budgets)
    return SweepPlan(sweep, base, sweep.stage, domains, weights, variants, budgets)


def recommended_variant(plan: SweepPlan, shares: dict[str, float]) -> Variant:
    """The variant that trains the fitted mixture, with the same budgets as the proxies (the fit
    never leaves the range of shares they tried, so the shared data covers it)."""
    sweep, proxy = plan.sweep, plan.by_role("point")[0]
    scale = sweep.scales[0] if sweep.scales else None
    raw = read_yaml(sweep.path("recipe"))
    variant = _variant(sweep, raw, plan.base, "recommended", "recommended", scale, proxy.tokens, shares)
    _set_budgets(variant, plan.budgets)
    return variant


def write_variants(plan: SweepPlan, variants: list[Variant] | None = None) -> list[Path]:
    """Each variant's recipe file (rewritten only when it changed, so a rerun keeps their dates)."""
    paths = []
    for v in variants if variants is not None else plan.variants:
        path = plan.recipe_path(v)
        text = (f"# Generated by tools/sweep.py from {plan.sweep.recipe} (sweep {plan.sweep.name}, {v.role} {v.label}).\n"
                "# Do not edit: change the sweep spec and rerun.\n" + yaml.safe_dump(v.raw, sort_keys=False, width=120))
        if not path.is_file() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_file(path, text)
        paths.append(path)
    return paths


def effective_mixture(recipe: Recipe, stage: PretrainStage) -> dict[str, dict[str, Decimal]]:
    """{domain: {source: weight}} of what the stage trains on, replay included."""
    out: dict[str, dict[str, Decimal]] = {}
    for source, weight in stage.mixture_weights(recipe).items():
        if weight > 0:
            out.setdefault(recipe.sources[source].domain, {})[source] = weight
    return out


def domain_sources(stage_mix: dict[str, dict[str, Decimal]], domain: str) -> dict[str, float]:
    """A domain's sources in the stage's proportions, summing to 1."""
    total = sum(stage_mix[domain].values())
    return {source: float(weight / total) for source, weight in stage_mix[domain].items()}


def _variant(sweep: Sweep, raw: dict, base: Recipe, label: str, role: str, scale: Scale | None, tokens: int,
             shares: dict[str, float] | None) -> Variant:
    stage_spec = base.stage(sweep.stage)
    stage_mix = effective_mixture(base, stage_spec)
    if shares is None:  # the stage's own mixture, replay folded in
        total = sum(sum(s.values()) for s in stage_mix.values())
        shares = {d: float(sum(s.values()) / total) for d, s in stage_mix.items()}
    out = copy.deepcopy(raw)
    out["name"] = f"{sweep.name}-{label}"
    out["description"] = f"sweep {sweep.name}: {role} {label} of {base.name}'s {sweep.stage}"
    out["paths"] = {**out["paths"], "runs": f"{raw['paths']['runs']}/sweeps/{sweep.name}", "dataset": sweep.name}
    if scale is not None:
        out["model"] = {**out["model"], **shape_for(base.model, scale, base)}
    stage = next(s for s in raw["stages"] if s["name"] == sweep.stage)
    stage = {k: v for k, v in copy.deepcopy(stage).items() if k not in ("init_from", "load_optimizer", "replay", "steps")}
    stage["tokens"] = tokens
    stage["mixture"] = {}
    for domain, share in shares.items():
        if share <= 0:
            continue
        if domain not in stage_mix:
            raise UserError("mixtures", f"domain {domain!r} is not in {sweep.stage}'s mixture (it has {sorted(stage_mix)})",
                            "sweep a stage that draws from every domain the proxies use")
        stage["mixture"][domain] = {"share": round(share, 6),
                                    "sources": {s: round(w, 6) for s, w in domain_sources(stage_mix, domain).items()}}
    stage["eval_suites"] = [sweep.eval_suite]
    if sweep.lr is not None:
        stage["lr"] = sweep.lr.model_dump(exclude_none=True)
    for key in ("micro_batch_size", "grad_accumulation"):
        if getattr(sweep, key) is not None:
            stage[key] = getattr(sweep, key)
    out["stages"] = [stage]
    for source in out["sources"].values():
        source.pop("budget_fraction", None)
        source.pop("max_tokens", None)
    recipe = recipe_from_dict(copy.deepcopy(out), source=f"sweep {sweep.name}, variant {label}")
    used = {d: s for d, s in shares.items() if s > 0}
    return Variant(label, role, out, recipe, scale.name if scale else None, build_plan(recipe).stages[0].tokens, used)


def _shared_budgets(variants: list[Variant]) -> dict[str, int]:
    """Per source: the most any variant draws, with the plan's margin."""
    most: dict[str, int] = {}
    for v in variants:
        for source, tokens in build_plan(v.recipe).stages[0].tokens_by("source").items():
            most[source] = max(most.get(source, 0), tokens)
    return {s: round_up(t * BUDGET_MARGIN) for s, t in most.items() if t}


def _set_budgets(variant: Variant, budgets: dict[str, int]) -> None:
    for source, budget in budgets.items():
        variant.raw["sources"][source]["max_tokens"] = budget
    variant.recipe = recipe_from_dict(copy.deepcopy(variant.raw), source=f"variant {variant.label}")


def _suite_domains(sweep: Sweep, base: Recipe, stage_mix: dict) -> list[str]:
    """The domains scored: those of the suite's ppl:<domain> tasks; every domain the sweep weighs or
    mixes must have one."""
    suites, _ = load_suites()
    if sweep.eval_suite not in suites:
        raise UserError("eval_suite", f"unknown suite {sweep.eval_suite!r}", f"use one of {sorted(suites)} (eval/suites.yaml)")
    scored = [t.split(":", 1)[1] for t in suites[sweep.eval_suite].tasks if t.startswith("ppl:")]
    needed = set(sweep.objective) | {d for mix in sweep.mixtures for d in mix} | set(stage_mix)
    missing = sorted(needed - set(scored))
    if missing:
        raise UserError("eval_suite", f"suite {sweep.eval_suite!r} has no held-out loss for domain(s) {missing}",
                        f"use a suite with ppl:{missing[0]} (eval/suites.yaml), or drop the domain")
    return [d for d in scored if d in needed]


def _objective(sweep: Sweep, domains: list[str], stage_mix: dict) -> dict[str, float]:
    if sweep.objective:
        raw = {d: float(sweep.objective.get(d, 0.0)) for d in domains}
    elif sweep.kind == "scaling":
        raw = {d: float(sum(stage_mix.get(d, {}).values())) for d in domains}
    else:
        raw = {d: 1.0 for d in domains}
    total = sum(raw.values())
    return {d: w / total for d, w in raw.items()}


def _count_label(tokens: int) -> str:
    for suffix, unit in (("b", 10**9), ("m", 10**6), ("k", 10**3)):
        if tokens >= unit:
            return f"{tokens / unit:.3g}{suffix}".replace(".", "p")
    return str(tokens)
