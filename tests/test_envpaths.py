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
