"""`${VAR}` / `${VAR:-default}` in recipe paths, and where relative paths point.

Committed configs keep the placeholders (they are the same for every user); a job resolves them
against its own environment, and an unset variable is an error that names the recipe field.

A path that is still relative once expanded (`runs`, `${SMOLRECIPE_DATA:-runs/data}/corpus`,
`$SMOLRECIPE_DATA` set to `data`) is relative to the project checkout, smolrecipe.PROJECT_ROOT,
not to the directory a tool was started from: resolve_recipe makes it absolute, so every tool
works from any working directory and a recipe's outputs land in one place. (The chat template and
the eval files are found from the checkout in the same way.) Committed configs are rendered from
the unresolved recipe and keep the paths as written.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping, Optional

from smolrecipe import PROJECT_ROOT
from smolrecipe.errors import UserError
from smolrecipe.recipe.schema import Recipe

_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)")


def unset_in(text: str, env: Optional[Mapping[str, str]] = None) -> list[str]:
    """Variables in `text` with neither a value nor a `:-default` (like the shell's ${VAR:-default},
    an empty variable counts as unset)."""
    env = os.environ if env is None else env
    return [
        m.group("name") or m.group("bare")
        for m in _VAR.finditer(text)
        if not env.get(m.group("name") or m.group("bare")) and m.group("default") is None
    ]


def expand(text: str, field: str, env: Optional[Mapping[str, str]] = None) -> str:
    env = os.environ if env is None else env
    missing = unset_in(text, env)
    if missing:
        raise UserError(
            field, f"environment variable ${missing[0]} is not set",
            f"export {missing[0]}=/some/path before running, or write an absolute path in the recipe",
        )

    def sub(match: re.Match) -> str:
        return env.get(match.group("name") or match.group("bare")) or match.group("default")

    return _VAR.sub(sub, text)


def project_path(path: str, root: Path = PROJECT_ROOT) -> str:
    """An expanded recipe path as the tools open it: a relative one is relative to the checkout."""
    return path if os.path.isabs(path) else str(root / path)


def path_fields(recipe: Recipe) -> dict[str, str]:
    """Every recipe field that holds a path, by its name in the recipe."""
    fields = {
        "paths.data": recipe.paths.data,
        "paths.runs": recipe.paths.runs,
        "tokenizer.path": recipe.tokenizer.path,
    }
    for name, source in recipe.sources.items():
        if source.path is not None:
            fields[f"sources.{name}.path"] = source.path
    for i, stage in enumerate(recipe.stages):
        data = getattr(stage, "data", None)  # a stage kind that reads a dataset of its own (SFT chats)
        if data is not None and data.path is not None:
            fields[f"stages[{i}].data.path"] = data.path
    return fields


def unset_variables(recipe: Recipe, env: Optional[Mapping[str, str]] = None) -> dict[str, list[str]]:
    """{field: [variables without a value or default]}, for a note when rendering portable configs."""
    return {field: names for field, text in path_fields(recipe).items() if (names := unset_in(text, env))}


def resolve_recipe(recipe: Recipe, env: Optional[Mapping[str, str]] = None, root: Path = PROJECT_ROOT) -> Recipe:
    """A copy of the recipe with every path expanded and made absolute (relative ones under `root`,
    the checkout); raises UserError on an unset variable."""
    fields = {field: project_path(expand(text, field, env), root) for field, text in path_fields(recipe).items()}
    sources = {
        name: src.model_copy(update={"path": fields[f"sources.{name}.path"]}) if src.path is not None else src
        for name, src in recipe.sources.items()
    }
    update = {
        "paths": recipe.paths.model_copy(update={"data": fields["paths.data"], "runs": fields["paths.runs"]}),
        "tokenizer": recipe.tokenizer.model_copy(update={"path": fields["tokenizer.path"]}),
        "sources": sources,
    }
    update["stages"] = [
        stage.model_copy(update={"data": stage.data.model_copy(update={"path": fields[f"stages[{i}].data.path"]})})
        if f"stages[{i}].data.path" in fields else stage
        for i, stage in enumerate(recipe.stages)
    ]
    return recipe.model_copy(update=update)
