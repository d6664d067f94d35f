"""Annealing: the decay phase of warmup-stable-decay, as a stage of its own.

It trains like any pretraining stage; the recipe's checks (smolrecipe.recipe.schema.AnnealStage)
make it continue its stable parent exactly: the parent's AdamW moments, the parent's final LR as
this stage's starting LR (no warmup), then a decay to (near) zero on the stage's own mixture.
smolrecipe.report.lr_curve draws the LR of the whole run so the boundary can be seen.
"""

from __future__ import annotations

from smolrecipe.kinds.pretrain import Pretrain


class Anneal(Pretrain):
    name = "anneal"


KIND = Anneal()
