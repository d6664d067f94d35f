"""The filters a recipe may name, mapped to datatrove pipeline steps.

A recipe says `filters: [{name: gopher_quality, args: {min_doc_words: 50}}]`; the args go to
the datatrove class's constructor unchanged, so datatrove's documentation is the reference for
them. Two filters are our own, each a few lines over datatrove's BaseFilter so that it shows up
under its own name in datatrove's stats: `field_in` keeps documents whose metadata field takes one
of the listed values (FineWeb-Edu's `int_score` in {4, 5}); `min_tokens` keeps documents of at least
`min_tokens` tokens of the recipe's tokenizer (the long documents of a context-extension stage).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

# name -> "module:Class" (imported only when a pipeline is built, so loading a recipe stays light)
FILTER_CLASSES = {
    "field_in": "smolrecipe.data.sources:FieldIn",
    "min_tokens": "smolrecipe.data.sources:TokenLength",  # args: min_tokens, max_tokens (the recipe's tokenizer)
    "gopher_quality": "datatrove.pipeline.filters:GopherQualityFilter",
    "gopher_repetition": "datatrove.pipeline.filters:GopherRepetitionFilter",
    "c4_quality": "datatrove.pipeline.filters:C4QualityFilter",
    "fineweb_quality": "datatrove.pipeline.filters:FineWebQualityFilter",
    "regex": "datatrove.pipeline.filters:RegexFilter",
}
FILTER_NAMES = tuple(FILTER_CLASSES)


def filter_class(name: str):
    module, cls = FILTER_CLASSES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def bad_filter_args(name: str, args: dict[str, Any]) -> str | None:
    """Why `args` do not fit the filter's constructor, or None when they do."""
    try:
        inspect.signature(filter_class(name)).bind(**args)
    except TypeError as exc:
        return str(exc)
    return None


def build_filter(name: str, args: dict[str, Any]):
    return filter_class(name)(**args)
