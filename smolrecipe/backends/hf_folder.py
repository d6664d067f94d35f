"""A transformers model folder, checked before anything loads it (evaluation, samples, conversion).

transformers reports a truncated `model.safetensors` as a SafetensorError from deep inside
from_pretrained, and a garbled `config.json` as a page-long OSError or ValueError; both come after
the tokenizer, the datasets and the evaluation harness have loaded. check_hf_folder reads only
config.json and each weights file's header (safetensors' safe_open checks that the header's
tensors cover the file exactly, which a cut copy does not), in well under a second, and reports
the first problem as one UserError line that names the file.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open

from smolrecipe.errors import UserError

INDEX = "model.safetensors.index.json"
RECOPY = "copy the checkpoint folder again (an interrupted copy or save leaves cut files), or use an earlier checkpoint"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines() or [type(err).__name__])[0][:200]


def read_json(path: Path, fix: str = RECOPY) -> object:
    """A checkpoint's JSON file (None when it is not there), or one UserError line naming it."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(str(path), f"not valid JSON ({_first_line(err)})", fix) from None
    except OSError as err:
        raise UserError(str(path), f"cannot be read ({err.strerror or _first_line(err)})", "check the file's permissions") from None


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a transformers folder: the index's shards, else every *.safetensors."""
    index = folder / INDEX
    if index.is_file():
        data = read_json(index)
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise UserError(str(index), "has no weight_map naming the shard files", RECOPY)
        files = [folder / name for name in sorted(set(map(str, weight_map.values())))]
        for path in files:
            if not path.is_file():
                raise UserError(str(path), f"missing: {INDEX} names it as a shard of the weights", RECOPY)
        return files
    return sorted(folder.glob("*.safetensors"))


def check_safetensors(path: Path) -> int:
    """The number of tensors in a safetensors file; a UserError when its header does not parse or
    does not cover the file (truncated, garbled, not safetensors at all)."""
    try:
        with safe_open(str(path), framework="numpy") as fh:  # the header only: nothing is read into memory
            return len(list(fh.keys()))
    except Exception as err:  # safetensors raises its own SafetensorError; an unreadable file an OSError
        raise UserError(str(path), f"not a readable safetensors file, truncated or corrupt ({_first_line(err)})", RECOPY) from None


def check_hf_folder(folder: str | Path) -> Path:
    """`folder` when config.json parses and names a model_type and every safetensors weights file
    is whole; otherwise a UserError naming the file. Folders with only PyTorch .bin weights pass
    (there is no cheap way to check a pickle)."""
    folder = Path(folder)
    config = folder / "config.json"
    if not config.is_file():
        raise UserError(str(folder), "has no config.json, so it is not a transformers model folder",
                        "give a checkpoint-<N> folder of a local run, a nanotron <checkpoints>/<step> folder, or a model id")
    data = read_json(config)
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise UserError(str(config), "names no model_type (transformers needs it to build the model)", RECOPY)
    files = weight_files(folder)
    if not files and not any(folder.glob("pytorch_model*.bin")):
        raise UserError(str(folder), "has no weights (model.safetensors)", "save the model with save_pretrained, or " + RECOPY)
    for path in files:
        check_safetensors(path)
    return folder
