"""A recipe source -> the datatrove reader that yields its documents, and the checks that run
before any pipeline starts (does the path exist, is the text field there, do the filter
arguments fit).

A source is either a hub dataset (`hf`, with `subset`, `data_dir`, `split`), read by datatrove's
HuggingFaceDatasetReader in streaming mode, or a local `path`: a JSONL/Parquet file, a folder of
them, or a glob. Text comes from `text_field`, or from `text_template` filled with the record's
fields; every other field is kept as document metadata so filters can look at it
(FineWeb-Edu's `int_score`).
"""

from __future__ import annotations

import glob
import json
import os
import string
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Iterator

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.readers import HuggingFaceDatasetReader, JsonlReader, ParquetReader

from smolrecipe.atomic import write_json
from smolrecipe.data.conversations import malformed_reason
from smolrecipe.data.hub import require_login
from smolrecipe.errors import UserError
from smolrecipe.recipe.filters import bad_filter_args, build_filter
from smolrecipe.recipe.schema import Source

PARQUET_SUFFIXES = (".parquet",)


class FieldIn(BaseFilter):
    """Keep documents whose metadata `field` takes one of `values` (FineWeb-Edu: int_score in {4, 5})."""

    name = "🎯 field in"

    def __init__(self, field: str, values: list, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.field = field
        self.values = set(values)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        value = doc.metadata.get(self.field)
        if value in self.values:
            return True
        return False, f"{self.field}_not_in_values" if value is not None else f"{self.field}_missing"


class TokenLength(BaseFilter):
    """Keep documents of at least `min_tokens` (and at most `max_tokens`) tokens of the recipe's
    tokenizer: the long documents a context-extension stage should read. The pipeline hands it the
    tokenizer (build_filters); the recipe gives only the bounds."""

    name = "📏 token length"

    def __init__(self, min_tokens: int = 0, max_tokens: int | None = None, tokenizer=None, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.min_tokens, self.max_tokens = min_tokens, max_tokens
        self._tokenizer = tokenizer  # a tokenizers.Tokenizer or its folder

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            raise UserError("filters", "the min_tokens filter counts tokens with the recipe's tokenizer, which was not given",
                            "build the tokenizer first: python tools/prepare_data.py RECIPE --build-tokenizer")
        if isinstance(self._tokenizer, (str, Path)):
            from tokenizers import Tokenizer

            self._tokenizer = Tokenizer.from_file(os.path.join(self._tokenizer, "tokenizer.json"))
        return self._tokenizer

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        # A document shorter in characters cannot be longer in tokens (a byte-level BPE token is at
        # least one character): most short documents are dropped without being encoded.
        if len(doc.text) < self.min_tokens:
            return False, "too_few_tokens"
        tokens = len(self.tokenizer.encode(doc.text, add_special_tokens=False).ids)
        if tokens < self.min_tokens:
            return False, "too_few_tokens"
        if self.max_tokens is not None and tokens > self.max_tokens:
            return False, "too_many_tokens"
        return True


def template_fields(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


def _template_adapter(template: str, id_key: str, reader, data: dict, path: str, id_in_file: int | str) -> dict:
    """datatrove reader adapter: the document text is `template` filled with the record's fields."""
    fields = template_fields(template)
    text = template.format(**{f: data.get(f, "") for f in fields})
    metadata = {k: v for k, v in data.items() if k not in fields and k != id_key}
    return {"text": text, "id": data.get(id_key, f"{path}/{id_in_file}"), "metadata": metadata}


@lru_cache(maxsize=None)
def _chat_tokenizer(folder: str):
    """The tokenizer whose chat template renders a chat source, loaded once per datatrove task
    (smolrecipe.data.tokenizer.load_tokenizer's import would close a cycle through tokenizer training)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def _chat_adapter(tokenizer_folder: str, field: str, id_key: str, reader, data: dict, path: str, id_in_file: int | str) -> dict:
    """datatrove reader adapter: the document text is the conversation in `field`, rendered by the
    chat template of the tokenizer in `tokenizer_folder`; a malformed one is counted as lost."""
    messages = data.get(field)
    metadata = {k: v for k, v in data.items() if k not in (field, id_key)}
    doc_id = data.get(id_key, f"{path}/{id_in_file}")
    reason = malformed_reason(messages)
    if reason is not None:
        reader.pending_loss = f"chat_{reason}"
        return {"text": "", "id": doc_id, "metadata": metadata}
    text = _chat_tokenizer(tokenizer_folder).apply_chat_template(messages, tokenize=False)
    return {"text": text, "id": doc_id, "metadata": metadata}


def _is_glob(path: str) -> bool:
    return any(ch in path for ch in "*?[")


def local_files(path: str) -> tuple[str, str | None, str]:
    """(folder, glob pattern or None, format) for a local source path: a file, a folder, or a glob."""
    if _is_glob(path):
        folder, pattern = _split_glob(path)
    elif os.path.isdir(path):
        folder, pattern = path, None
    else:
        folder, pattern = os.path.dirname(path) or ".", os.path.basename(path)
    names = [pattern] if pattern else os.listdir(folder) if os.path.isdir(folder) else []
    kind = "parquet" if any(n.endswith(PARQUET_SUFFIXES) for n in names) else "jsonl"
    if pattern is None:
        pattern = "*.parquet" if kind == "parquet" else "*.jsonl*"
    return folder, pattern, kind


def _split_glob(path: str) -> tuple[str, str]:
    parts = Path(path).parts
    for i, part in enumerate(parts):
        if _is_glob(part):
            return str(Path(*parts[:i])) if i else ".", str(Path(*parts[i:]))
    return os.path.dirname(path), os.path.basename(path)


def matching_files(path: str) -> list[str]:
    folder, pattern, _ = local_files(path)
    return sorted(p for p in glob.glob(os.path.join(folder, pattern), recursive=True) if os.path.isfile(p))


def hub_options(source) -> dict[str, Any]:
    """`datasets.load_dataset` keyword arguments of a hub source (a recipe Source or SFTData)."""
    options = {"split": source.split, "name": source.subset, "data_dir": getattr(source, "data_dir", None),
               "revision": source.revision}
    return {k: v for k, v in options.items() if v is not None}


# ---------------------------------------------------------------------------------------------
# Readers that count what they cannot use
#
# datatrove's JsonlReader logs a warning and moves on when a line is not JSON, and stops reading
# a file at its first byte that is not UTF-8 (the rest of the file is silently gone); every reader
# drops a record without text. Ours count each such record as a `lost_<reason>` stat (summed over
# the tasks into the manifest) and note the first file and line of each reason per task, so
# publishing can fail with "file X line N" when a source loses more than its max_lost_fraction.

LOST_PREFIX = "lost_"  # reasons: not_utf8, bad_json, not_a_record, empty_text, chat_<why> (conversations.malformed_reason)
EXCUSED_LOSSES = ("empty_text",)  # counted, but an empty record is not data lost: no threshold


class _CountsLosses:
    """Mixin for datatrove readers: `lost(reason, file, line)` counts and locates a record."""

    lost_folder: str | None = None
    pending_loss: str | None = None  # why the adapter emptied the record it just read (a malformed chat)
    _rank = 0

    def lost(self, reason: str, filepath: str, line: int | str) -> None:
        self.stat_update(LOST_PREFIX + reason)
        note = Path(self.lost_folder) / f"{self._rank:05d}-{reason}.json" if self.lost_folder else None
        if note is not None and not note.exists():  # the first of its reason in this task
            write_json(note, {"reason": reason, "file": str(filepath), "line": line})

    def lost_empty(self, filepath: str, line: int | str) -> None:
        """A record that gave no document: no text, or the reason the adapter left."""
        reason, self.pending_loss = self.pending_loss or "empty_text", None
        self.lost(reason, filepath, line)

    def get_document_from_dict(self, data: dict, source_file: str, id_in_file: int | str):
        document = super().get_document_from_dict(data, source_file, id_in_file)
        if document is None:
            self.lost_empty(source_file, id_in_file)
        return document

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        self._rank = rank
        yield from super().run(data, rank, world_size)


class CountingJsonlReader(_CountsLosses, JsonlReader):
    """JsonlReader that decodes line by line: a bad line is counted and skipped, and the rest of
    the file is still read."""

    def read_file(self, filepath: str):
        import orjson

        where = self.data_folder.resolve_paths(filepath)
        with self.data_folder.open(filepath, "rb", compression=self.compression) as f:
            for li, raw in enumerate(f):
                with self.track_time():
                    if not raw.strip():
                        continue
                    try:
                        record = orjson.loads(raw.decode("utf-8"))
                    except UnicodeDecodeError:
                        self.lost("not_utf8", where, li + 1)
                        continue
                    except orjson.JSONDecodeError:
                        self.lost("bad_json", where, li + 1)
                        continue
                    if not isinstance(record, dict):
                        self.lost("not_a_record", where, li + 1)
                        continue
                    document = JsonlReader.get_document_from_dict(self, record, filepath, li)
                    if document is None:
                        self.lost_empty(where, li + 1)
                        continue
                yield document


class CountingParquetReader(_CountsLosses, ParquetReader):
    pass


class CountingHubReader(_CountsLosses, HuggingFaceDatasetReader):
    pass


def build_reader(source: Source, limit: int = -1, lost_folder: str | None = None, tokenizer_folder: str | None = None):
    """The datatrove reader for a (resolved) source; records it cannot use are counted (see above)
    and the first of each reason per task is noted under `lost_folder`. A chat source
    (`messages_field`) needs `tokenizer_folder`, whose chat template renders it."""
    common: dict[str, Any] = {"text_key": source.text_field, "limit": limit}
    if source.text_template:
        common["adapter"] = partial(_template_adapter, source.text_template, "id")
    if source.messages_field:
        if tokenizer_folder is None:
            raise ValueError("a chat source (messages_field) is read with the recipe's tokenizer folder")
        common["adapter"] = partial(_chat_adapter, str(tokenizer_folder), source.messages_field, "id")
    if source.hf is not None:
        reader = CountingHubReader(source.hf, dataset_options=hub_options(source), streaming=True, **common)
    else:
        folder, pattern, kind = local_files(source.path)
        reader_class = CountingParquetReader if kind == "parquet" else CountingJsonlReader
        reader = reader_class(folder, glob_pattern=pattern, **common)
    reader.lost_folder = lost_folder
    return reader


def hub_shards(source: Source) -> int | None:
    """How many files a streamed hub source is split into (datatrove gives each task whole files,
    so more tasks than files would idle); None when it cannot be opened here."""
    from datasets import load_dataset

    try:
        return load_dataset(source.hf, streaming=True, **hub_options(source)).n_shards
    except Exception:  # offline, gated: check_source reports the cause
        return None


def iter_records(origin) -> Iterator[dict]:
    """Raw records of a (resolved) hub-or-local origin: a recipe Source or its SFT data."""
    if origin.hf is not None:
        from datasets import load_dataset

        yield from load_dataset(origin.hf, streaming=True, **hub_options(origin))
        return
    for path in matching_files(origin.path):
        yield from iter_local(path)


def first_stage_record(data, where: str, example: str) -> dict:
    """The first record of a stage's own data (`where`: its recipe field), to check its fields before
    any output; a local `path` must hold files (`example`: what they should be)."""
    if data.path is not None and not matching_files(data.path):
        raise UserError(f"{where}.path", f"no JSONL or Parquet files at {data.path}", f"point it at {example}")
    return first_record(data, where)


def first_record(origin, field: str) -> dict:
    """The first raw record, to check its fields before a pipeline starts; UserError on `field`
    when there is none or it cannot be read."""
    where = f"{field}.{'hf' if origin.hf is not None else 'path'}"
    try:
        record = next(iter_records(origin), None)
    except Exception as exc:  # hub down, no such dataset, unreadable file: one line, with the cause
        cause = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise UserError(where, f"cannot read it ({type(exc).__name__}: {cause})",
                          "check the dataset id/subset/split (log in once for gated sets) or the file format") from None
    if record is None:
        raise UserError(where, "has no records", "point it at a non-empty dataset")
    return record


def iter_local(path: str) -> Iterator[dict]:
    if path.endswith(PARQUET_SUFFIXES):
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=1):
            yield from batch.to_pylist()
        return
    import fsspec

    with fsspec.open(path, "rt", compression="infer") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def check_source(name: str, source: Source) -> None:
    """Raise UserError when a (resolved) source cannot be read as the recipe says.
    Cheap: it opens one record, so it runs for every source before any output is written."""
    field = f"sources.{name}"
    if source.hf is not None and source.gated:
        require_login(f"{field}.hf", source.hf, f"https://huggingface.co/datasets/{source.hf}")
    for i, spec in enumerate(source.filters):
        problem = bad_filter_args(spec.name, spec.args)
        if problem:
            raise UserError(f"{field}.filters[{i}].args", f"do not fit filter '{spec.name}' ({problem})",
                              "see the datatrove class's constructor for its arguments")
    if source.needles is not None and not os.path.exists(source.path or ""):
        return  # prepare_data generates it from its haystack source before reading it (smolrecipe.data.needle_source)
    if source.path is not None:
        if not os.path.exists(local_files(source.path)[0] if _is_glob(source.path) else source.path):
            raise UserError(f"{field}.path", f"{source.path} does not exist",
                              "point it at a JSONL/Parquet file or folder (the tiny recipe's: tools/make_demo_corpus.py)")
        if not matching_files(source.path):
            raise UserError(f"{field}.path", f"no JSONL or Parquet files at {source.path}",
                              "point it at a .jsonl/.parquet file, a folder of them, or a glob")
    record = first_record(source, field)
    key = "text_template" if source.text_template else "messages_field" if source.messages_field else "text_field"
    wanted = template_fields(source.text_template) if source.text_template else [source.messages_field or source.text_field]
    missing = [f for f in wanted if f not in record]
    if missing:
        raise UserError(f"{field}.{key}", f"field '{missing[0]}' is not in the records",
                          f"use one of {sorted(record)}")
    if source.messages_field:
        reason = malformed_reason(record[source.messages_field])
        if reason is not None:
            raise UserError(f"{field}.messages_field", f"the first record's '{source.messages_field}' is not a conversation ({reason})",
                            "point it at a list of {role, content} messages (smol-smoltalk's `messages`)")


TOKENIZER_FILTERS = {"min_tokens"}  # filters that count tokens: the pipeline hands them the recipe's tokenizer


def build_filters(source: Source, tokenizer=None) -> list:
    """The source's filter steps; `tokenizer` (a tokenizers.Tokenizer or the recipe's tokenizer folder)
    for those that count tokens."""
    return [build_filter(spec.name, {**spec.args, "tokenizer": tokenizer} if spec.name in TOKENIZER_FILTERS else spec.args)
            for spec in source.filters]
