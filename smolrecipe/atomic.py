"""Folders and files that appear whole or not at all.

Every output folder a tool publishes (tokenizer, demo corpus, nanoset, SFT dataset) is written
into a temporary sibling and renamed into place, so a crash leaves the previous folder or the
complete new one, never a half-written one. Single files (manifests, summaries, reports, plots)
go the same way through write_file / write_json.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """Yield an empty sibling folder to write `out` into. When the block succeeds it replaces
    `out`; when it raises, it is removed and `out` is left as it was."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    os.chmod(staging, 0o755)  # mkdtemp makes it private; published folders are ordinary shared data
    try:
        yield staging
        replace_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def replace_folder(new: Path, out: Path) -> None:
    """Rename `new` to `out`, replacing a folder already there."""
    if not out.exists():
        os.replace(new, out)
        return
    # A folder cannot be renamed over a non-empty one: move the old one aside first. Only between
    # these two renames is `out` absent; if the second fails, the old folder goes back.
    retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    try:
        os.replace(out, retired / out.name)
        try:
            os.replace(new, out)
        except OSError:
            os.replace(retired / out.name, out)
            raise
    finally:
        shutil.rmtree(retired, ignore_errors=True)


def write_file(path: Path, data: bytes | str) -> Path:
    """Write `data` to a temporary name in `path`'s folder, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; these are ordinary shared outputs
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, data: Any) -> Path:
    return write_file(path, json.dumps(data, indent=2) + "\n")
