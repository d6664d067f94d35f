"""Reading a recipe file: YAML -> a validated Recipe, with pydantic's errors turned into one line
each that names the field and the fix."""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Annotated, Union

import yaml
from pydantic import BaseModel, ValidationError

from smolrecipe.errors import UserError
from smolrecipe.recipe.schema import STAGE_KINDS, Recipe
from smolrecipe.recipe.suites import suite_names


class RecipeLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, except that a key given twice in one mapping (at any depth) is an
    error: PyYAML would keep the last value and say nothing. Anchors, aliases and merge keys
    (`<<: *anchor`, whose keys the mapping may override) work as before."""

    def __init__(self, stream):
        super().__init__(stream)
        self._checked: set[int] = set()

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        # Every mapping passes through here (from construct_mapping) before PyYAML merges the `<<`
        # keys into its own, also when another mapping merges it first: the one place to see each
        # mapping's keys as written, once.
        if id(node) not in self._checked:
            self._checked.add(id(node))
            first: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    earlier = first.setdefault(key, key_node)
                except TypeError:  # an unhashable (complex) key: PyYAML refuses it itself
                    continue
                if earlier is not key_node:
                    raise UserError(f"line {key_node.start_mark.line + 1}",
                                    f"key '{key}' appears twice in one mapping (first at line {earlier.start_mark.line + 1}); "
                                    "YAML would keep only the last one", "keep one of the two")
        super().flatten_mapping(node)


def read_yaml(path: Path) -> object:
    """A recipe file's YAML, or one UserError line: unreadable, not UTF-8 text, not valid YAML, a
    key given twice."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError("recipe", f"not UTF-8 text (byte {exc.start}: {exc.reason}); a binary file?",
                        "pass the recipe YAML file, saved as UTF-8 text (recipes/tiny.yaml is one)", str(path)) from None
    except OSError as exc:
        raise UserError("recipe", f"cannot read {path} ({exc.strerror or exc})", "check that the file is readable", str(path)) from None
    try:
        return yaml.load(text, Loader=RecipeLoader)  # a SafeLoader: plain data only
    except UserError as err:
        raise err.with_source(str(path)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "YAML"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]  # a ReaderError (control character) has no .problem
        raise UserError(where, f"not valid YAML ({problem})", "fix the YAML syntax", str(path)) from None


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise UserError("recipe", f"file {path} does not exist", "pass a path such as recipes/tiny.yaml")
    return recipe_from_dict(read_yaml(path), source=str(path))


def recipe_from_dict(data: object, source: str | None = None) -> Recipe:
    if not isinstance(data, dict):
        raise UserError("recipe", "the top level is not a mapping", "start the file with `name: ...`", source)
    if "sft" in data:
        raise UserError("sft", "a top-level `sft:` section is no longer read: SFT is a kind of stage",
                        "move the section to the end of `stages:` as `- kind: sft` with the same fields (see recipes/tiny.yaml)",
                        source)
    try:
        recipe = Recipe.model_validate(data)
        _check_eval_suites(recipe)
        return recipe
    except UserError as err:
        raise err.with_source(source) if source else err from None
    except ValidationError as exc:
        raise first_error(exc, source) from None


def _check_eval_suites(recipe: "Recipe") -> None:
    known = suite_names()
    for stage in recipe.stages:
        where = f"stages.{stage.name}"
        unknown = [name for name in stage.eval_suites if name not in known]
        if unknown:
            raise UserError(f"{where}.eval_suites", f"unknown suite(s) {unknown}", f"use some of {', '.join(known)} (eval/suites.yaml)")


def first_error(exc: ValidationError, source: str | None, root: type[BaseModel] = Recipe) -> UserError:
    example = "recipes/tiny.yaml" if root is Recipe else "sweeps/tiny_scaling.yaml"  # a file that shows every field
    # A misspelt key shows up twice (unknown + missing); the unknown one is the better report.
    errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
    err = errors[0]
    loc = err["loc"]
    field = _format_loc(_without_kind_tag(loc))
    kind = err["type"]
    if kind in ("union_tag_not_found", "union_tag_invalid"):
        kinds = ", ".join(STAGE_KINDS)
        if kind == "union_tag_not_found":
            return UserError(f"{field}.kind", "required field is missing", f"add `kind:` with one of: {kinds}", source)
        return UserError(f"{field}.kind", f"unknown stage kind {err['input'].get('kind')!r}", f"use one of: {kinds}", source)
    if kind == "extra_forbidden":
        allowed = _allowed_keys(root, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"remove it or correct the spelling (allowed here: {', '.join(allowed)})" if allowed else "remove it"
        if close:
            hint = f"did you mean '{close[0]}'? " + hint
        return UserError(field, f"unknown key '{loc[-1]}'", hint, source)
    if kind == "missing":
        return UserError(field, "required field is missing", f"add `{loc[-1]}:` ({example} shows every field)", source)
    message = err["msg"].removeprefix("Value error, ")
    ctx = err.get("ctx", {})
    fixes = {
        "greater_than": f"use a value > {ctx.get('gt')}",
        "greater_than_equal": f"use a value >= {ctx.get('ge')}",
        "less_than": f"use a value < {ctx.get('lt')}",
        "less_than_equal": f"use a value <= {ctx.get('le')}",
        "literal_error": f"use one of {ctx.get('expected')}",
        "string_pattern_mismatch": "use lower-case letters, digits and underscores, starting with a letter",
        "int_parsing": "write a whole number" + (", e.g. 14_024_704_000 or \"14.0B\"" if loc[-1] == "tokens" else ""),
    }
    fix = fixes.get(kind, f"give a value of the type shown in {example}")
    if kind == "value_error":
        fix = "see the message"
        if ";" in message:
            message, fix = (part.strip() for part in message.split(";", 1))
    got = err.get("input")
    if kind != "value_error" and not isinstance(got, (dict, list)):
        message = f"{message} (got {got!r})"
    return UserError(field, message, fix, source)


def _without_kind_tag(loc: tuple) -> tuple:
    """pydantic puts a stage's kind into the error path (stages.0.sft.data); the recipe has no such key."""
    if len(loc) > 2 and loc[0] == "stages" and isinstance(loc[1], int) and loc[2] in STAGE_KINDS:
        return loc[:2] + loc[3:]
    return loc


def _format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "recipe"


def _allowed_keys(model: type, loc: tuple) -> list[str]:
    """Walk the schema along `loc` to list the keys allowed where an unknown key was found."""
    current: object = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(part, int):
            args = typing.get_args(current)
            current = args[0] if args else None
        elif part in STAGE_KINDS and typing.get_origin(current) in (Union, types.UnionType):
            current = STAGE_KINDS[part]  # the stage kind pydantic tried, from its tag in the error path
        elif isinstance(current, type) and issubclass(current, BaseModel):
            field = next((f for n, f in current.model_fields.items() if part in (n, f.alias)), None)
            current = field.annotation if field else None
        else:  # a dict keyed by user names (sources, mixture): step into the value type
            args = typing.get_args(current)
            current = args[1] if len(args) == 2 else None
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items()]
    return []


def _unwrap(tp: object) -> object:
    """Optional[X] -> X; Annotated[X, ...] -> X."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = args[0] if len(args) == 1 else tp
            if len(args) != 1:
                return tp
        else:
            return tp
