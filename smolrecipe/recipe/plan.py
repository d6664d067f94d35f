"""Derived numbers: everything a run needs that follows from the recipe.

Train steps from token budgets and the global batch, per-folder dataset weights from domain
shares x source shares x replay, LR decay lengths, checkpoint folders and the resume chain.
The nanotron renderer, the preflight report and (later) the local backend all read this plan,
so they cannot disagree about a number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Literal, Optional

from smolrecipe import runs
from smolrecipe.errors import UserError
from smolrecipe.recipe.schema import LRSchedule, Recipe, StageSpec

WEIGHT_DECIMALS = 6  # weights are written rounded to this many places, still summing to exactly 1


@dataclass(frozen=True)
class FolderWeight:
    source: str
    domain: str
    folder: str
    weight: float


@dataclass(frozen=True)
class StagePlan:
    name: str
    kind: str  # a key of STAGE_KINDS (schema) and smolrecipe.kinds.KINDS (behaviour)
    train_steps: int
    tokens_requested: int
    micro_batch_size: int
    grad_accumulation: int
    global_batch: int  # sequences per optimizer step
    tokens_per_step: int
    weights: tuple[FolderWeight, ...]  # the blend of nanoset folders; empty for a stage with its own dataset
    lr: LRSchedule
    lr_decay_steps: int
    checkpoints_path: str
    resume_checkpoint_path: Optional[str]
    load_optimizer: bool
    load_lr_scheduler: bool
    init_from: Optional[str]
    sequence_length: int  # tokens per window (a context-extension stage's own, else training.sequence_length)
    rope_theta: float  # the RoPE base (a context-extension stage's, inherited by the stages after it)
    max_position: int  # the longest window the model has been trained on, this stage included
    dataset: Optional[str] = None  # the stage's own prepared dataset (SFT records), if it has one

    @property
    def reads_sources(self) -> bool:
        """Whether the stage trains on the recipe's sources (pretraining) rather than a dataset of its own."""
        return bool(self.weights)

    @property
    def tokens(self) -> int:
        """Tokens actually trained on: whole steps, so at least the requested budget."""
        return self.train_steps * self.tokens_per_step

    def tokens_by(self, key: Literal["domain", "source"]) -> dict[str, int]:
        out: dict[str, int] = {}
        for fw in self.weights:
            name = fw.domain if key == "domain" else fw.source
            out[name] = out.get(name, 0) + round(fw.weight * self.tokens)
        return out

    def final_checkpoint(self) -> str:
        return runs.step_checkpoint(self.checkpoints_path, self.train_steps)


@dataclass(frozen=True)
class RunPlan:
    recipe: Recipe
    stages: tuple[StagePlan, ...]  # in the recipe's order

    def stage(self, name: str) -> StagePlan:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    def index(self, name: str) -> int:
        """The stage's place in the run (summaries record it; the report orders stages by it)."""
        return [s.name for s in self.stages].index(name)

    def checked_stage(self, name: str, field: str = "stage", also: tuple[str, ...] = ()) -> StagePlan | None:
        """The stage called `name` (None for one of `also`, e.g. `all`), or a UserError naming `field`."""
        names = [s.name for s in self.stages]
        if name in also:
            return None
        if name not in names:
            raise UserError(field, f"{name!r} is not a stage of {self.recipe.name}", f"use one of {names + list(also)}")
        return self.stage(name)


def source_folder(recipe: Recipe, source: str) -> str:
    """Where prepare_data writes a source's nanoset folder, and where nanotron reads it."""
    return f"{recipe.paths.data}/{recipe.data_name}/{source}"


def steps_for(tokens: Optional[int], steps: Optional[int], tokens_per_step: int) -> tuple[int, int]:
    """(train_steps, requested tokens): a budget is rounded up to whole steps."""
    if steps is not None:
        return steps, steps * tokens_per_step
    assert tokens is not None
    return math.ceil(tokens / tokens_per_step), tokens


def rounded_weights(exact: dict[str, Decimal]) -> dict[str, float]:
    """Round to WEIGHT_DECIMALS places; the rounding residue goes to the largest weight so the
    written weights still add up to exactly 1."""
    total = sum(exact.values())
    quantum = Decimal(1).scaleb(-WEIGHT_DECIMALS)
    rounded = {k: (v / total).quantize(quantum, rounding=ROUND_HALF_EVEN) for k, v in exact.items()}
    largest = max(rounded, key=lambda k: rounded[k])
    rounded[largest] += Decimal(1) - sum(rounded.values())
    return {k: float(v) for k, v in rounded.items()}


def _ordered_sources(recipe: Recipe, names: set[str]) -> list[str]:
    # Folders are listed in the order of the recipe's `sources:` section, for stable, readable configs.
    return [name for name in recipe.sources if name in names]


def build_plan(recipe: Recipe) -> RunPlan:
    plans: list[StagePlan] = []
    for i, stage in enumerate(recipe.stages):
        plan = _stage_plan(recipe, stage, plans)
        if plan.lr_decay_steps <= 0:
            raise UserError(
                f"stages[{i}].lr.warmup_steps",
                f"warmup/decay start ({stage.lr.decay_start} steps) leaves no steps to decay in a stage of {plan.train_steps} steps",
                f"use fewer warmup steps than {plan.train_steps} or a larger budget",
            )
        plans.append(plan)
    return RunPlan(recipe=recipe, stages=tuple(plans))


def _folder_weights(recipe: Recipe, stage: StageSpec) -> tuple[FolderWeight, ...]:
    exact = stage.mixture_weights(recipe)
    if not exact:
        return ()
    weights = rounded_weights(exact)
    return tuple(FolderWeight(name, recipe.sources[name].domain, source_folder(recipe, name), weights[name])
                 for name in _ordered_sources(recipe, set(weights)))


def _stage_plan(recipe: Recipe, stage: StageSpec, earlier: list[StagePlan]) -> StagePlan:
    batch, context = recipe.batch(stage), recipe.context(stage.name)
    steps, requested = steps_for(stage.tokens, stage.steps, batch.tokens_per_step)
    checkpoints = runs.checkpoints_dir(recipe, stage.name)
    if stage.init_from is None:
        # Pointing a first stage at its own folder makes a requeued job pick up its latest
        # checkpoint (nanotron reads latest.txt there) and a fresh one start from scratch.
        resume, load_lr, load_opt = checkpoints, True, True
    else:
        # A new stage starts from the final checkpoint of the one it builds on, with a fresh LR
        # schedule; an explicit step folder fails loudly if that stage did not finish.
        parent = next(p for p in earlier if p.name == stage.init_from)
        resume, load_lr, load_opt = parent.final_checkpoint(), False, stage.load_optimizer
    return StagePlan(
        name=stage.name, kind=stage.kind, train_steps=steps, tokens_requested=requested,
        micro_batch_size=batch.micro_batch_size, grad_accumulation=batch.grad_accumulation,
        global_batch=batch.global_batch, tokens_per_step=batch.tokens_per_step,
        weights=_folder_weights(recipe, stage), lr=stage.lr, lr_decay_steps=steps - stage.lr.decay_start,
        checkpoints_path=checkpoints, resume_checkpoint_path=resume, load_optimizer=load_opt, load_lr_scheduler=load_lr,
        init_from=stage.init_from, sequence_length=context.sequence_length, rope_theta=context.rope_theta,
        max_position=context.max_position, dataset=stage.data_folder(recipe),
    )


def resume_interrupted(plan: RunPlan) -> tuple[RunPlan, list[str]]:
    """For a job about to start: a chained stage that already wrote checkpoints of its own was
    interrupted (preempted, time limit), so it resumes from its own latest checkpoint, LR schedule
    and optimizer included, instead of restarting from the previous stage. Returns the plan and
    the names of the stages that resume. (A first stage already points at its own folder.)"""
    stages, resumed = [], []
    for stage in plan.stages:
        if stage.init_from is not None and runs.latest_step(stage.checkpoints_path) is not None:
            stage = replace(stage, resume_checkpoint_path=stage.checkpoints_path, load_lr_scheduler=True,
                            load_optimizer=True)
            resumed.append(stage.name)
        stages.append(stage)
    return replace(plan, stages=tuple(stages)), resumed
