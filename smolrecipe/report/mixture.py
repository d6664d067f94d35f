"""Which domain each pretraining stage of a run trained on how much: the domain shares of the
recipe's plan (replay included), for the check that a stage lowers held-out loss where it upweights.

A run folder keeps only the recipe's hash (each stage's summary.json / settings.json), not the
recipe, so the recipe file is read (by default recipes/<run name>.yaml) and used only when every
pretraining stage of the run recorded its hash: a recipe edited since would credit a stage with a
mixture it did not train on.
"""

from __future__ import annotations

from pathlib import Path

from smolrecipe import PROJECT_ROOT, shown_path
from smolrecipe.errors import UserError
from smolrecipe.runs import StageLog, read_settings

Shares = dict[str, dict[str, float]]  # stage -> domain -> share of its training tokens


def default_recipe(run_dir: Path) -> Path:
    """A run folder is <paths.runs>/<recipe name>; the checkout's recipes/<name>.yaml is the likely source."""
    return PROJECT_ROOT / "recipes" / f"{Path(run_dir).resolve().name}.yaml"


def recorded_hash(stage: StageLog) -> str | None:
    return (stage.summary or {}).get("recipe_hash") or read_settings(stage.folder).get("recipe_hash")


def recipe_hashes(recipe) -> set[str]:
    """The hashes a run of this recipe may have recorded: the local backend hashes the recipe with
    its paths resolved (in this environment), the configs the recipe as written."""
    from smolrecipe.recipe.envpaths import resolve_recipe

    hashes = {recipe.hash()}
    try:
        hashes.add(resolve_recipe(recipe).hash())
    except UserError:  # an unset path variable: only the recipe as written can match
        pass
    return hashes


def domain_shares(recipe_path: Path, stages: list[StageLog]) -> tuple[Shares | None, str | None]:
    """(the shares of each pretraining stage, None) when the recipe is the run's; otherwise
    (None, why not), or (None, None) when there is no recipe file to read."""
    from smolrecipe.recipe.loading import load_recipe
    from smolrecipe.recipe.plan import build_plan

    path = Path(recipe_path)
    if not path.is_file():
        return None, None
    try:
        recipe = load_recipe(path)
        plan = {s.name: s for s in build_plan(recipe).stages if s.reads_sources}
    except UserError as err:
        return None, f"{shown_path(path)} not read ({err.line()})"
    pretrain = [s for s in stages if s.name in plan]
    other = [s.name for s in pretrain if recorded_hash(s) not in recipe_hashes(recipe)]
    if other or not pretrain:
        why = f"{', '.join(other)} recorded another recipe hash" if other else "it names none of the run's stages"
        return None, f"{shown_path(path)} is not the recipe this run was trained with ({why})"
    shares: Shares = {s.name: {} for s in pretrain}
    for s in pretrain:
        for fw in plan[s.name].weights:  # per source folder, replay included
            shares[s.name][fw.domain] = shares[s.name].get(fw.domain, 0.0) + fw.weight
    return shares, None
