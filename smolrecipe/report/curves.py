"""Loss (and LR) curves of a run's stages on one axis of tokens seen since the first stage began."""

from __future__ import annotations

from dataclasses import dataclass

from smolrecipe.runs import StageLog


@dataclass
class Curve:
    """One stage's loss (and the LR each step trained with) against tokens seen since the start of the first stage."""

    stage: str
    label: str
    tokens: list[int]
    loss: list[float]
    start: int  # cumulative tokens before this stage: where its boundary line goes
    end: int  # cumulative tokens after this stage: where its final checkpoint sits
    lr: list[float | None] | None = None  # None per step that logged no LR


def loss_curves(stages: list[StageLog]) -> list[Curve]:
    """One curve per stage; x is tokens seen since the first stage began, so each stage starts
    where the previous one's total ended."""
    curves, start = [], 0
    for stage in stages:
        curves.append(Curve(stage=stage.name, label=stage.label, start=start, end=start + stage.tokens,
                            tokens=[start + r["tokens"] for r in stage.records],
                            loss=[r["loss"] for r in stage.records], lr=[r.get("lr") for r in stage.records]))
        start += stage.tokens
    return curves
