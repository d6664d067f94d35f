"""Prepared data checked against its manifest before anything reads it.

tools/prepare_data.py publishes a folder only when it is complete, and writes its manifest last.
What can still go wrong is what happens to the folder afterwards (a copy cut short, a purge that
removed some files, a disk that filled up) and a recipe edited since (another tokenizer, another
`model.vocab_size`). Every consumer (the preflight of tools/make_config.py, both backends before a
stage starts) therefore checks, with stats and a few small reads only, never the token files'
contents:

- a nanoset folder: its manifest; every `.ds` it lists, with that many bytes, and no other;
  each one's `.index` (its last document end is the file's token count) and `.metadata` (tokenizer,
  token size, token count); the tokens in all files together; the tokenizer it was made with is the
  recipe's; its token size can hold the model's vocabulary (and the vocabulary size, when the
  manifest records it, is the model's);
- a stage's own dataset (SFT records): its manifest, its Parquet file's row count, its tokenizer;
- the model's vocabulary against the tokenizer folder, on every run: an id past `model.vocab_size`
  would index past the embedding table (an IndexError hours into a job), and nanotron asserts the
  two are equal (smolrecipe.data.tokenizer.check_vocabulary; prepare_data's tokenizer step runs it
  too, also when the folder is up to date).

Each finding is one UserError naming the folder and what to do.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smolrecipe.data.tokenizer import check_vocabulary, prepare_command
from smolrecipe.errors import UserError
from smolrecipe.recipe.estimates import token_size_for
from smolrecipe.runs import read_json_if_any

if TYPE_CHECKING:
    from smolrecipe.recipe.plan import RunPlan, StagePlan
    from smolrecipe.recipe.schema import Recipe

MANIFEST = "manifest.json"  # every prepared folder's, written last by smolrecipe.data.pipeline
def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """A folder's manifest; None when it has none, {} when it cannot be read (verify_* say so)."""
    path = Path(folder) / MANIFEST
    return read_json_if_any(path) if path.is_file() else None


# ---------------------------------------------------------------------------------------------
# A source's nanoset folder

def verify_source_folder(folder: str | Path, source: str, tokenizer: str | None = None, vocab_size: int | None = None,
                         recipe_path: str = "RECIPE", exact_tokenizer: bool = False) -> dict[str, Any]:
    """The folder's manifest, once the folder agrees with it; UserError otherwise (also when the
    folder has no manifest: it was never prepared). `tokenizer` is the recipe's tokenizer folder
    (as the configs name it), `vocab_size` the model's. The folder's tokenizer must be the same
    folder; with `exact_tokenizer` (nanotron, which compares the strings) also written the same way."""
    folder = Path(folder)
    field = f"sources.{source}"
    manifest = read_manifest(folder)
    if manifest is None:
        raise UserError(field, f"{folder} is not prepared (no {MANIFEST})", f"run {prepare_command(recipe_path, f'--source {source}')}")
    redo = f"run {prepare_command(recipe_path, f'--source {source}')} again"  # it prepares such a folder anew

    def fail(problem: str, fix: str = redo) -> None:
        raise UserError(field, problem, fix)

    try:
        listed = {str(f["name"]): int(f["bytes"]) for f in manifest["files"]}
        tokens, token_size, made_with = int(manifest["tokens"]), int(manifest["token_size"]), str(manifest["tokenizer"])
    except (KeyError, TypeError, ValueError):
        fail(f"{folder / MANIFEST} is unreadable or lacks files/tokens/token_size/tokenizer")
    if token_size not in (2, 4) or not listed:
        fail(f"{folder / MANIFEST} lists {len(listed)} files of {token_size}-byte tokens")

    if tokenizer is not None and made_with != tokenizer:
        if not same_folder(made_with, tokenizer):
            fail(f"{folder} was tokenized with {made_with}, the recipe's tokenizer is {tokenizer}",
                 f"set tokenizer.path back to {made_with}, or {redo}")
        if exact_tokenizer:
            fail(f"{folder}'s .metadata names the tokenizer {made_with}, the stage's config {tokenizer}: the same folder, "
                 "written differently, and nanotron asserts the two strings are equal", redo)
    if vocab_size is not None:
        recorded = manifest.get("vocab_size")
        if recorded is not None and int(recorded) != vocab_size:
            fail(f"{folder} was tokenized with a vocabulary of {int(recorded):,} entries, model.vocab_size is {vocab_size:,}",
                 f"set model.vocab_size: {int(recorded)}, or {redo}")
        if token_size != token_size_for(vocab_size):
            fail(f"{folder} stores {token_size}-byte tokens, a vocabulary of {vocab_size:,} (model.vocab_size) is stored in "
                 f"{token_size_for(vocab_size)}-byte ones (it was tokenized with another tokenizer)",
                 f"check model.vocab_size against the tokenizer, or {redo}")

    on_disk = {p.name: p for p in folder.glob("*.ds")}
    for name in sorted(set(on_disk) - set(listed)):
        fail(f"{folder / name} is not in the folder's manifest (training would read it too)",
             f"remove it, or {redo}")
    held = 0
    for name, size in sorted(listed.items()):
        ds = folder / name
        if name not in on_disk:
            fail(f"{ds} is missing (the manifest lists {len(listed)} .ds files)")
        actual = ds.stat().st_size
        if actual != size:
            fail(f"{ds} has {actual:,} bytes, its manifest says {size:,} (cut short or changed after preparation)")
        n = size // token_size
        _check_companions(ds, n, token_size, made_with, fail)
        held += n
    if held != tokens:
        fail(f"{folder}: its .ds files hold {held:,} tokens ({token_size}-byte), its manifest says {tokens:,}")
    return manifest


def same_folder(a: str, b: str) -> bool:
    """Whether two recipe paths (a relative one is relative to the checkout) name the same folder."""
    from smolrecipe.recipe.envpaths import project_path

    return os.path.realpath(project_path(a)) == os.path.realpath(project_path(b))


def _check_companions(ds: Path, tokens: int, token_size: int, made_with: str, fail) -> None:
    """The `.index` (document ends, uint64, the last one the file's token count) and the
    `.metadata` (`tokenizer|token_size`, token count) datatrove writes next to each `.ds`."""
    index, metadata = ds.with_name(ds.name + ".index"), ds.with_name(ds.name + ".metadata")
    for companion in (index, metadata):
        if not companion.is_file():
            fail(f"{companion} is missing (datatrove writes one next to each .ds; training reads it)")
    if ds.stat().st_size % token_size:
        fail(f"{ds} has {ds.stat().st_size:,} bytes, not a whole number of {token_size}-byte tokens (cut short)")
    size = index.stat().st_size
    if size == 0 or size % 8:
        fail(f"{index} has {size:,} bytes, not a whole number of 8-byte document ends (cut short)")
    with index.open("rb") as f:
        f.seek(size - 8)
        (last,) = struct.unpack("<Q", f.read(8))
    if last != tokens:
        fail(f"{index} ends its last document at token {last:,}, {ds.name} holds {tokens:,} tokens")
    lines = metadata.read_text(errors="replace").splitlines()
    expected = f"{made_with}|{token_size}"
    if not lines or lines[0] != expected:
        fail(f"{metadata} says {lines[0] if lines else '(nothing)'!r}, its folder's manifest {expected!r}")
    if len(lines) < 2 or lines[1].strip() != str(tokens):
        fail(f"{metadata} counts {lines[1].strip() if len(lines) > 1 else 'no'} tokens, {ds.name} holds {tokens:,}")


# ---------------------------------------------------------------------------------------------
# A stage's own dataset (SFT prompt/completion records)

def verify_stage_folder(folder: str | Path, stage: str, tokenizer: str | None = None, recipe_path: str = "RECIPE") -> dict[str, Any]:
    """The manifest of a stage's own prepared dataset once its Parquet file has the rows it lists;
    UserError otherwise (also when it was never prepared)."""
    folder = Path(folder)
    field = f"{stage}.data"
    manifest = read_manifest(folder)
    if manifest is None:
        raise UserError(field, f"{folder} is not prepared (no {MANIFEST})", f"run {prepare_command(recipe_path, '--sft')}")
    redo = f"delete {folder} and run {prepare_command(recipe_path, '--sft')} again"
    name, records, made_with = manifest.get("file"), manifest.get("records"), manifest.get("tokenizer")
    if not isinstance(name, str) or not isinstance(records, int):
        raise UserError(field, f"{folder / MANIFEST} is unreadable or lacks file/records", redo)
    path = folder / name
    if not path.is_file():
        raise UserError(field, f"{path} is missing (its folder's manifest lists it)", redo)
    rows = _parquet_rows(path)
    if rows is None:
        raise UserError(field, f"{path} is not a readable Parquet file (cut short or changed after preparation)", redo)
    if rows != records:
        raise UserError(field, f"{path} has {rows:,} records, its manifest says {records:,}", redo)
    if tokenizer is not None and made_with is not None and not same_folder(str(made_with), tokenizer):
        raise UserError(field, f"{folder} was rendered with the tokenizer {made_with}, the recipe's is {tokenizer}",
                        f"set tokenizer.path back to {made_with}, or {redo}")
    return manifest


def _parquet_rows(path: Path) -> int | None:
    """Rows in a Parquet file, from its footer alone (a file cut short has none)."""
    import pyarrow.parquet as pq

    try:
        return pq.read_metadata(path).num_rows
    except Exception:  # pyarrow's ArrowInvalid, OSError: either way, not readable
        return None


# ---------------------------------------------------------------------------------------------
# What each consumer runs

def verify_stage_data(recipe: "Recipe", stage: "StagePlan", recipe_path: str = "RECIPE", entries: int | None = None,
                      exact_tokenizer: bool = False) -> None:
    """Before a stage trains (either backend): the model's vocabulary against the tokenizer folder,
    and every folder the stage reads against its manifest. `recipe` and `stage` resolved."""
    check_vocabulary(recipe, recipe_path=recipe_path, entries=entries)
    for fw in stage.weights:
        verify_source_folder(fw.folder, fw.source, recipe.tokenizer.path, recipe.model.vocab_size, recipe_path, exact_tokenizer)
    if stage.dataset is not None:
        verify_stage_folder(stage.dataset, stage.name, recipe.tokenizer.path, recipe_path)


def verify_prepared(plan: "RunPlan", recipe_path: str = "RECIPE") -> list[str]:
    """The preflight's check (a resolved plan): the vocabulary when the tokenizer folder exists, and
    every folder any stage reads that has been prepared. Returns the folders not prepared yet (the
    preflight's warnings say so); a prepared folder that disagrees with its manifest is a UserError."""
    recipe = plan.recipe
    check_vocabulary(recipe, required=False, recipe_path=recipe_path)
    missing, seen = [], set()
    for stage in plan.stages:
        for fw in stage.weights:
            if fw.folder in seen:
                continue
            seen.add(fw.folder)
            if read_manifest(fw.folder) is None:
                missing.append(fw.folder)
            else:
                verify_source_folder(fw.folder, fw.source, recipe.tokenizer.path, recipe.model.vocab_size, recipe_path)
        if stage.dataset is not None and stage.dataset not in seen:
            seen.add(stage.dataset)
            if read_manifest(stage.dataset) is None:
                missing.append(stage.dataset)
            else:
                verify_stage_folder(stage.dataset, stage.name, recipe.tokenizer.path, recipe_path)
    return missing
