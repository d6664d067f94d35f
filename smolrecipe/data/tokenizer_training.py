"""A recipe's own tokenizer (`tokenizer.train`): byte-level BPE trained on the text of its sources.

The model is the `tokenizers` library's BPE, set up as LLaMA-3 and SmolLM set theirs up: every
digit is a token of its own (arithmetic needs it), the rest is GPT-2's byte-level split, so any
text encodes without an unknown token. The special tokens get ids 0, 1, ... in the order listed.

The text is read through the same datatrove readers the pipelines use (smolrecipe.data.sources),
source by source in a fixed order, each up to `max_characters`; a hub source is streamed and
stops there. Training on the same text writes a byte-identical tokenizer.json (tested).

tokenizer.py owns the folder (staging, provenance file, reuse); this module trains and says what
makes a trained folder stale: the train block, the template, the special-token settings and the
local files read (their names, sizes and bytes; a hub source by its id, subset, split, revision).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from typing import Iterator

from smolrecipe.data.sources import build_reader, check_source, local_files, matching_files
from smolrecipe.errors import UserError
from smolrecipe.recipe.schema import Recipe, Source

# The source settings that decide which text is read (a moved data folder is not a change).
READ_FIELDS = {"hf", "subset", "data_dir", "revision", "split", "text_field", "text_template"}
BATCH = 1000  # texts handed to the trainer at a time


@dataclass
class SourceText:
    """What was read of one source: characters, and how many of its files (None: all of them,
    the source ran out before max_characters, so a file added later would be read too)."""

    characters: int = 0
    files: int | None = None


@dataclass
class Corpus:
    read: dict[str, SourceText] = field(default_factory=dict)

    @property
    def characters(self) -> int:
        return sum(s.characters for s in self.read.values())


def training_sources(recipe: Recipe) -> list[str]:
    """The sources the tokenizer learns from, in reading order. Default: every source, by name, each
    text once (a source that reads the same files as another, e.g. a length-filtered copy, is not
    read again), but the needle and chat sources: the tokenizer generates or renders their text."""
    if recipe.tokenizer.train.sources:
        return list(recipe.tokenizer.train.sources)
    names, origins = [], set()
    for name in sorted(recipe.sources):
        source = recipe.sources[name]
        origin = (source.hf, source.subset, source.data_dir, source.split, source.path)
        if source.needles is None and source.messages_field is None and origin not in origins:
            names.append(name)
            origins.add(origin)
    return names


# ---------------------------------------------------------------------------------------------
# Staleness


def fingerprint(recipe: Recipe, template: str, files_read: dict[str, int | None]) -> dict:
    """The provenance of a trained folder; `files_read`: how many files of each local source the
    training read (absent or None: all)."""
    spec = recipe.tokenizer
    return {
        "train": spec.train.model_dump(mode="json"),
        "sources": {name: _source_identity(recipe.sources[name], files_read.get(name)) for name in training_sources(recipe)},
        "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest(),
        "bos_token_id": spec.bos_token_id,
        "eos_token_id": spec.eos_token_id,
        "document_end": spec.document_end,
    }


def is_up_to_date(recipe: Recipe, template: str, stored: dict) -> bool:
    """Whether a folder with provenance `stored` is what training now would write: the same
    settings, and the files it read (as many as it read then) unchanged."""
    sources = stored.get("sources")
    if not isinstance(sources, dict):
        return False  # a folder built from a `base`, or by an older version
    files_read = {name: entry.get("files") for name, entry in sources.items() if isinstance(entry, dict)}
    return fingerprint(recipe, template, files_read) == stored


def _source_identity(source: Source, files: int | None) -> dict:
    read = source.model_dump(mode="json", include=READ_FIELDS, exclude_none=True)
    if source.hf is not None:
        return {"read": read}
    folder = local_files(source.path)[0]
    paths = matching_files(source.path)
    return {"read": read, "files": files, "sha256": files_sha256(folder, paths if files is None else paths[:files])}


def files_sha256(folder: str, paths: list[str]) -> str:
    """sha256 over (name relative to `folder`, size, sha256 of the bytes) of each file, in order."""
    digest = hashlib.sha256()
    for path in paths:
        content = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                content.update(chunk)
        digest.update(f"{os.path.relpath(path, folder)}\0{os.path.getsize(path)}\0{content.hexdigest()}\n".encode())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Reading the text


def source_texts(source: Source, limit: int, read: SourceText) -> Iterator[str]:
    """The source's document texts through its datatrove reader, cut at `limit` characters in
    all; `read` is filled in as they go. The source's filters, dedup and max_documents are not
    applied: a tokenizer only needs text of the right kind, and they would need the pipeline."""
    last_file = None
    for document in build_reader(source).run():
        text = document.text[: limit - read.characters]
        read.characters += len(text)
        last_file = document.metadata.get("file_path", last_file)
        yield text
        if read.characters >= limit:
            read.files = _files_up_to(source, last_file)
            return
    read.files = None  # ran out first: every file was read


def _files_up_to(source: Source, last_file: str | None) -> int | None:
    """How many of a local source's files (in matching_files order) were read when reading stopped
    in `last_file`; None (all, the safe answer) when it cannot be told."""
    if source.hf is not None or last_file is None:
        return None
    paths = [os.path.realpath(p) for p in matching_files(source.path)]
    where = os.path.realpath(last_file)
    return paths.index(where) + 1 if where in paths else None


def corpus_batches(recipe: Recipe, corpus: Corpus) -> Iterator[list[str]]:
    """Every training source's texts, source after source, in batches for the trainer."""
    limit = recipe.tokenizer.train.max_characters
    for name in training_sources(recipe):
        read = corpus.read.setdefault(name, SourceText())
        batch: list[str] = []
        for text in source_texts(recipe.sources[name], limit, read):
            batch.append(text)
            if len(batch) == BATCH:
                yield batch
                batch = []
        if batch:
            yield batch


# ---------------------------------------------------------------------------------------------
# Training


def new_tokenizer():
    """An untrained byte-level BPE with digits split one per token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer


def trainer(recipe: Recipe):
    from tokenizers import pre_tokenizers, trainers

    train = recipe.tokenizer.train
    return trainers.BpeTrainer(vocab_size=train.vocab_size, min_frequency=train.min_frequency, show_progress=False,
                               special_tokens=list(train.special_tokens), initial_alphabet=pre_tokenizers.ByteLevel.alphabet())


def train_tokenizer(recipe: Recipe, template: str, say=print):
    """Train the recipe's tokenizer (checking every training source first). Returns (transformers
    fast tokenizer, provenance fingerprint); says one line of numbers."""
    names = training_sources(recipe)
    for name in names:
        check_source(name, recipe.sources[name])
    start = time.time()
    tokenizer, corpus = new_tokenizer(), Corpus()
    tokenizer.train_from_iterator(corpus_batches(recipe, corpus), trainer=trainer(recipe))
    _check_size(recipe, tokenizer.get_vocab_size(with_added_tokens=True), corpus)
    say(f"tokenizer: trained a {recipe.tokenizer.train.vocab_size:,}-entry byte-level BPE on {len(names)} source(s) "
        f"({', '.join(f'{n} {r.characters:,}' for n, r in corpus.read.items())}; {corpus.characters:,} characters) "
        f"in {time.time() - start:.1f} s")
    files_read = {name: read.files for name, read in corpus.read.items()}
    return wrap(recipe, tokenizer), fingerprint(recipe, template, files_read)


def _check_size(recipe: Recipe, entries: int, corpus: Corpus) -> None:
    asked = recipe.tokenizer.train.vocab_size
    if entries != asked:
        raise UserError("tokenizer.train.vocab_size",
                        f"{asked:,} asked, but the {corpus.characters:,} characters read have too few repeated pairs: "
                        f"training stopped at {entries:,} entries",
                        f"set it (and model.vocab_size) to {entries}, lower tokenizer.train.min_frequency, or read more text")


def wrap(recipe: Recipe, tokenizer):
    """The trained tokenizer as transformers' fast tokenizer: bos/eos from the recipe's ids, padding
    with the document-end token (byte-level BPE has no unknown token)."""
    from transformers import PreTrainedTokenizerFast

    spec = recipe.tokenizer
    special = spec.train.special_tokens
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=special[spec.bos_token_id],
                                   eos_token=special[spec.eos_token_id], pad_token=spec.document_end or special[spec.eos_token_id])
