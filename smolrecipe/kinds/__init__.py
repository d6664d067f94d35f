"""Stage kinds: what differs between a pretraining stage, an SFT stage, and the kinds to come.

Adding a kind: its recipe fields as a StageSpec subclass in smolrecipe.recipe.schema (listed in
STAGE_KINDS), its behaviour as a StageKind in a module of this package (listed below), its tests.
"""

from __future__ import annotations

from typing import Sequence, TypeVar

from smolrecipe.errors import UserError
from smolrecipe.kinds import anneal, long_context, preference, pretrain, sft
from smolrecipe.kinds.base import StageKind

KINDS: dict[str, StageKind] = {kind.name: kind for kind in (pretrain.KIND, anneal.KIND, long_context.KIND, sft.KIND, preference.KIND)}
T = TypeVar("T")


def kind_of(name: str) -> StageKind:
    """The kind called `name` (a stage plan's or a checkpoint summary's `kind`)."""
    if name not in KINDS:
        raise UserError("kind", f"unknown stage kind {name!r}", f"use one of {', '.join(KINDS)}")
    return KINDS[name]


def is_chat_model(kind: str | None) -> bool:
    """Whether a stage of this kind (a name read from a plan, a summary or provenance) trains a chat model."""
    return kind in KINDS and KINDS[kind].chat_model


def base_and_chat(stages: Sequence[T]) -> tuple[T | None, T | None]:
    """(base, chat) of stages in training order (anything with a `.kind` name): the chat model is the
    first stage of a chat kind, the base the last stage before it of another kind."""
    chat_at = next((i for i, s in enumerate(stages) if is_chat_model(s.kind)), None)
    if chat_at is None:
        return (stages[-1] if stages else None), None
    base = next((s for s in reversed(stages[:chat_at]) if not is_chat_model(s.kind)), None)
    return base, stages[chat_at]


def kind_for_nanotron_dataset(class_name: str) -> StageKind:
    """The kind whose nanotron dataset section parses as `class_name` (our entry point's view of a config)."""
    for kind in KINDS.values():
        if kind.engine == "nanotron" and kind.nanotron_dataset_class == class_name:
            return kind
    nanotron_kinds = [k.name for k in KINDS.values() if k.engine == "nanotron"]
    raise UserError("data_stages[0].data.dataset", f"{class_name} is not a dataset section of any stage kind",
                    f"render the config with tools/make_config.py (kinds nanotron trains: {', '.join(nanotron_kinds)})")
