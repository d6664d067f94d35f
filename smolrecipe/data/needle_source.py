"""A `needles:` source: needle-in-a-haystack training documents, generated before it is prepared.

The documents (smolrecipe.data.needles.needle_documents) are written as JSONL into the source's
`path`, with a manifest; from there the source is prepared like any local one (datatrove reads,
filters and tokenizes it into its nanoset folder). The haystacks are the text of another source,
read through that source's own datatrove reader. The folder is written all-or-nothing and rebuilt
only when what it depends on changes: the needle settings, the haystack source, the tokenizer.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

from smolrecipe.atomic import staged_folder, write_json
from smolrecipe.data.pipeline import NOT_IN_FINGERPRINT, fingerprint, tokenizer_folder
from smolrecipe.data.verify import MANIFEST, read_manifest
from smolrecipe.recipe.schema import Recipe

DOCUMENTS_FILE = "documents.jsonl"
HAYSTACK_CHARACTERS_PER_TOKEN = 8  # read this many characters of haystack text per token of the longest document


def needle_count(recipe: Recipe, name: str, budget: int) -> int:
    """Documents to write: the source's `documents`, or enough to fill its token budget."""
    spec = recipe.sources[name].needles
    assert spec is not None
    if spec.documents is not None:
        return spec.documents
    return max(1, math.ceil(budget / (sum(spec.lengths) / len(spec.lengths))))


def build_needle_source(recipe: Recipe, name: str, budget: int, say: Callable[[str], None] = print) -> bool:
    """Write the source's documents into its `path` unless they are up to date; True when written."""
    from smolrecipe.data.needles import needle_documents
    from smolrecipe.data.tokenizer import load_tokenizer
    from smolrecipe.data.tokenizer_training import SourceText, source_texts

    source = recipe.sources[name]
    spec = source.needles
    assert spec is not None and source.path is not None
    out, count = Path(source.path), needle_count(recipe, name, budget)
    haystack = recipe.sources[spec.haystack]
    fp = fingerprint(recipe, needles=spec.model_dump(mode="json"), documents=count,
                     haystack=haystack.model_dump(mode="json", exclude=NOT_IN_FINGERPRINT))
    if (read_manifest(out) or {}).get("fingerprint") == fp and (out / DOCUMENTS_FILE).is_file():
        say(f"{name}: needle documents up to date ({out})")
        return False
    tokenizer = load_tokenizer(tokenizer_folder(recipe))
    # Haystacks reuse sentences across documents (each haystack is distinct within itself), so a
    # few times the longest document's worth of text is enough for any count.
    limit = HAYSTACK_CHARACTERS_PER_TOKEN * max(spec.lengths) * 4
    texts = list(source_texts(haystack, limit, SourceText()))
    documents = needle_documents(tokenizer, texts, spec.lengths, count, seed=spec.seed, digits=spec.digits,
                                 where=f"sources.{name}.needles")
    with staged_folder(out) as staging:
        (staging / DOCUMENTS_FILE).write_text("".join(json.dumps(d) + "\n" for d in documents))
        write_json(staging / MANIFEST, {"fingerprint": fp, "recipe": recipe.name, "documents": count,
                                        "haystack": spec.haystack, "haystack_characters": sum(map(len, texts)),
                                        "lengths": spec.lengths, "seed": spec.seed, "digits": spec.digits})
    mean = sum(d["length"] for d in documents) / len(documents)
    say(f"{name}: {count:,} needle documents of ~{mean:,.0f} tokens from {spec.haystack}'s text -> {out}")
    return True
