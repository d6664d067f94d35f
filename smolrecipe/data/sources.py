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
from functools import partial
from pathlib import Path
from typing import Any, Iterator

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter

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


def template_fields(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


def _template_adapter(template: str, id_key: str, reader, data: dict, path: str, id_in_file: int | str) -> dict:
    """datatrove reader adapter: the document text is `template` filled with the record's fields."""
    fields = template_fields(template)
    text = template.format(**{f: data.get(f, "") for f in fields})
    metadata = {k: v for k, v in data.items() if k not in fields and k != id_key}
    return {"text": text, "id": data.get(id_key, f"{path}/{id_in_file}"), "metadata": metadata}


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


def build_reader(source: Source, limit: int = -1):
    """The datatrove reader for a (resolved) source."""
    from datatrove.pipeline.readers import HuggingFaceDatasetReader, JsonlReader, ParquetReader

    common: dict[str, Any] = {"text_key": source.text_field, "limit": limit}
    if source.text_template:
        common["adapter"] = partial(_template_adapter, source.text_template, "id")
    if source.hf is not None:
        return HuggingFaceDatasetReader(source.hf, dataset_options=hub_options(source), streaming=True, **common)
    folder, pattern, kind = local_files(source.path)
    reader = ParquetReader if kind == "parquet" else JsonlReader
    return reader(folder, glob_pattern=pattern, **common)


def iter_records(origin) -> Iterator[dict]:
    """Raw records of a (resolved) hub-or-local origin: a recipe Source or its SFT data."""
    if origin.hf is not None:
        from datasets import load_dataset

        yield from load_dataset(origin.hf, streaming=True, **hub_options(origin))
        return
    for path in matching_files(origin.path):
        yield from iter_local(path)


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
    for i, spec in enumerate(source.filters):
        problem = bad_filter_args(spec.name, spec.args)
        if problem:
            raise UserError(f"{field}.filters[{i}].args", f"do not fit filter '{spec.name}' ({problem})",
                              "see the datatrove class's constructor for its arguments")
    if source.path is not None:
        if not os.path.exists(local_files(source.path)[0] if _is_glob(source.path) else source.path):
            raise UserError(f"{field}.path", f"{source.path} does not exist",
                              "point it at a JSONL/Parquet file or folder (the tiny recipe's: tools/make_demo_corpus.py)")
        if not matching_files(source.path):
            raise UserError(f"{field}.path", f"no JSONL or Parquet files at {source.path}",
                              "point it at a .jsonl/.parquet file, a folder of them, or a glob")
    record = first_record(source, field)
    wanted = template_fields(source.text_template) if source.text_template else [source.text_field]
    missing = [f for f in wanted if f not in record]
    if missing:
        key = "text_template" if source.text_template else "text_field"
        raise UserError(f"{field}.{key}", f"field '{missing[0]}' is not in the records",
                          f"use one of {sorted(record)}")


def build_filters(source: Source) -> list:
    return [build_filter(spec.name, spec.args) for spec in source.filters]
