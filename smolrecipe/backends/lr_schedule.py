"""The learning-rate schedule of a stage, as a PyTorch scheduler the HF Trainer can step, and the
LR of every step that the nanotron config must reproduce (checked by `make_config.py --check`).

It must give the LR nanotron gives for the generated config at every step, so the local backend
rehearses the same run. nanotron's schedule (helpers.lr_scheduler_builder) is: linear warmup from
0 (or a constant one at the peak), an optional stable phase, then cosine / linear / 1-sqrt decay
to `min_decay_lr`, stepped once per optimizer step starting from step 0.

transformers' warmup-stable-decay schedule has the same stable and decay phases (its min-LR ratio
is nanotron's `min_decay_lr / peak`), but its warmup starts at the minimum LR instead of 0, so the
warmup ramp is taken from transformers' plain linear warmup instead. Both backends call
`scheduler.step()` after `optimizer.step()`, so optimizer step k (1-based) uses lambda(k - 1).
"""

from __future__ import annotations

from functools import partial

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR
from transformers.optimization import _get_wsd_scheduler_lambda

from smolrecipe.recipe.plan import StagePlan


def lr_factor(step: int, *, warmup_steps: int, warmup_style: str, decay_start: int, decay_steps: int,
              decay: str, min_ratio: float) -> float:
    """The LR at 0-based scheduler step `step`, as a fraction of the peak."""
    if warmup_style == "linear" and step < warmup_steps:
        return step / warmup_steps
    # A constant warmup is the stable phase of a schedule without warmup: the peak until decay starts.
    warmup = warmup_steps if warmup_style == "linear" else 0
    return _get_wsd_scheduler_lambda(
        step, num_warmup_steps=warmup, num_stable_steps=decay_start - warmup, num_decay_steps=decay_steps,
        warmup_type="linear", decay_type=decay, min_lr_ratio=min_ratio, num_cycles=0.5,
    )


def stage_lr_factor(stage: StagePlan):
    """lr_factor with the stage's settings bound: what LambdaLR calls every step."""
    lr = stage.lr
    return partial(lr_factor, warmup_steps=lr.warmup_steps, warmup_style=lr.warmup_style, decay_start=lr.decay_start,
                   decay_steps=stage.lr_decay_steps, decay=lr.decay, min_ratio=lr.min / lr.peak)


def build_scheduler(optimizer: Optimizer, stage: StagePlan) -> LambdaLR:
    return LambdaLR(optimizer, stage_lr_factor(stage))


def stage_lrs(stage: StagePlan) -> list[float]:
    """The LR each optimizer step of the stage uses (index 0 = step 1)."""
    factor = stage_lr_factor(stage)
    return [stage.lr.peak * factor(step) for step in range(stage.train_steps)]
