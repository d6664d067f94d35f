"""The ways to train a stage, behind one interface (smolrecipe.backends.base.Backend).

  nanotron   the cluster: our entry point over nanotron's trainer, torchrun, one process per GPU
  local      this machine: transformers' Trainer (the CPU rehearsal)

Both train the same plan on the same data path with the same LR schedule; the run folder they
write (smolrecipe.runs) is read the same way for either.
"""

from __future__ import annotations

from pathlib import Path

from smolrecipe.backends.base import Backend, PreparedStage
from smolrecipe.backends.local.backend import BACKEND as LOCAL
from smolrecipe.backends.nanotron.backend import BACKEND as NANOTRON
from smolrecipe.errors import UserError

BACKENDS: dict[str, Backend] = {backend.name: backend for backend in (NANOTRON, LOCAL)}

__all__ = ["BACKENDS", "Backend", "PreparedStage", "backend", "checkpoint_backend"]


def backend(name: str, field: str = "--backend") -> Backend:
    if name not in BACKENDS:
        raise UserError(field, f"{name!r} is not a backend", f"use one of {', '.join(BACKENDS)}")
    return BACKENDS[name]


def checkpoint_backend(checkpoint: Path) -> Backend | None:
    """The backend a checkpoint folder belongs to (None: not a checkpoint of either)."""
    return next((b for b in BACKENDS.values() if b.owns(checkpoint)), None)
