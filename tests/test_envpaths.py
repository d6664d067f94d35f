from pathlib import Path

import pytest

from smolrecipe import PROJECT_ROOT
from smolrecipe.errors import UserError
from smolrecipe.recipe.envpaths import expand, resolve_recipe, unset_variables
from smolrecipe.recipe.loading import recipe_from_dict


def test_expand_forms():
    env = {"SCRATCH": "/scratch/me", "EMPTY": ""}
    assert expand("${SCRATCH}/data", "f", env) == "/scratch/me/data"
    assert expand("$SCRATCH/data", "f", env) == "/scratch/me/data"
    assert expand("${NOPE:-runs}/x", "f", env) == "runs/x"
    assert expand("${EMPTY:-fallback}", "f", env) == "fallback"
    assert expand("/abs/path", "f", env) == "/abs/path"


def test_unset_variable_names_field_and_fix():
    with pytest.raises(UserError) as exc:
        expand("${SCRATCH}/data", "paths.data", {})
    line = str(exc.value)
    assert "paths.data" in line and "$SCRATCH" in line and "export SCRATCH=" in line
    assert "\n" not in line


def test_resolve_recipe_expands_every_path(tiny_dict):
    tiny_dict["paths"]["data"] = "${SCRATCH}/d"
    tiny_dict["sources"]["prose"]["path"] = "${SCRATCH}/prose.jsonl"
    recipe = recipe_from_dict(tiny_dict)
    assert set(unset_variables(recipe, {})) == {"paths.data", "sources.prose.path"}
    resolved = resolve_recipe(recipe, {"SCRATCH": "/s"})
    assert resolved.paths.data == "/s/d"
    assert resolved.sources["prose"].path == "/s/prose.jsonl"
    assert resolved.paths.runs == str(PROJECT_ROOT / "runs")  # ${SMOLRECIPE_RUNS:-runs} with the variable unset
    assert resolved.stage("sft").data.path == str(PROJECT_ROOT / "runs/data/corpus/chats")  # relative: to the checkout
    assert recipe.paths.data == "${SCRATCH}/d"  # the original is untouched


def test_a_variable_with_a_default_is_not_reported_unset():
    from smolrecipe.recipe.envpaths import unset_in

    assert unset_in("${HAS_DEFAULT:-x}/${NO_DEFAULT}/$BARE", {}) == ["NO_DEFAULT", "BARE"]
    assert unset_in("${SET}/y", {"SET": "/s"}) == []


def test_fingerprints_do_not_depend_on_where_the_checkout_is(root):
    """Resolved paths are absolute under the checkout; a stage's fingerprint (resume and reuse
    checks) must not change with that prefix, so a moved checkout, or a run made when relative
    paths were left relative, is still recognised."""
    from smolrecipe.backends.nanotron.config import stage_fingerprint
    from smolrecipe.recipe.loading import load_recipe
    from smolrecipe.recipe.plan import build_plan

    recipe = load_recipe(root / "recipes" / "tiny.yaml")
    absolute = build_plan(resolve_recipe(recipe, env={}))
    relative = build_plan(resolve_recipe(recipe, env={}, root=Path("")))
    assert absolute.recipe.paths.data == f"{PROJECT_ROOT}/runs/data" and relative.recipe.paths.data == "runs/data"
    assert [stage_fingerprint(absolute, s) for s in absolute.stages] == [stage_fingerprint(relative, s) for s in relative.stages]
    elsewhere = build_plan(resolve_recipe(recipe, env={}, root=Path("/elsewhere")))
    assert stage_fingerprint(elsewhere, elsewhere.stages[0]) != stage_fingerprint(absolute, absolute.stages[0])  # not a blind hash
