"""Loss (and LR) curves of a run's stages on one axis of tokens seen since the first stage began."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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


def parent_of(stage: StageLog, stages: list[StageLog]) -> StageLog | None:
    """The stage whose checkpoint `stage` started from (its summary's init_from lies in that stage's folder)."""
    origin = (stage.summary or {}).get("init_from")
    if not origin:
        return None
    return next((s for s in stages if s is not stage and Path(origin).resolve().is_relative_to(s.folder.resolve())), None)


def loss_curves(stages: list[StageLog]) -> list[Curve]:
    """One curve per stage; x is tokens seen since the first stage began: a stage starts where the
    stage it started from ended, so the arms of a branch (an extension off stage 3, the annealing
    arms of a stable stage) start at the same x; a stage whose parent is unknown follows the one before."""
    curves: list[Curve] = []
    ends: dict[str, int] = {}
    for stage in stages:
        parent = parent_of(stage, stages)
        start = ends[parent.name] if parent is not None and parent.name in ends else (curves[-1].end if curves else 0)
        curves.append(Curve(stage=stage.name, label=stage.label, start=start, end=start + stage.tokens,
                            tokens=[start + r["tokens"] for r in stage.records],
                            loss=[r["loss"] for r in stage.records], lr=[r.get("lr") for r in stage.records]))
        ends[stage.name] = start + stage.tokens
    return curves
