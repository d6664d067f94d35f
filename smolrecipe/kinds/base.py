"""What a kind of stage decides: one class per kind, one instance of each in smolrecipe.kinds.KINDS.

The shared machinery (plan, resume chain, checkpoints, logs, LR schedule, stop requests, SLURM
jobs) never asks which kind a stage is; where the kinds differ, it calls the stage's kind:

  nanotron_dataset   the `data_stages[0].data.dataset` section of the stage's nanotron config
  engine_data        the rows and collator our nanotron entry point trains on (one rank's view)
  local_data         the rows and collator the local backend (transformers' Trainer) trains on
  prepare_data       the stage's own dataset, when it has one (the pretraining sources are
                     prepared once for every stage by tools/prepare_data.py)
  chat_model         whether its checkpoints answer in the chat format: evaluation prompts them
                     through the chat template, and the report compares them with the base model
  engine             what trains it on the cluster: "nanotron" (our entry point, nanotron checkpoints)
                     or "trl" (TRL's trainers over transformers checkpoints, on both backends)
  trainer            for a "trl" kind: its trainer and arguments classes, and trainer_settings the
                     arguments of its own beside the shared ones

A kind's recipe fields and checks are its StageSpec subclass in smolrecipe.recipe.schema.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from smolrecipe.data.pipeline import fingerprint, read_manifest, tokenizer_folder
from smolrecipe.data.sources import local_files, matching_files
from smolrecipe.data.tokenizer_training import files_sha256

if TYPE_CHECKING:
    from smolrecipe.recipe.plan import StagePlan
    from smolrecipe.recipe.schema import Recipe, StageSpec

Rows = Any  # a torch Dataset of engine rows (smolrecipe.data.batches)
Collate = Callable[[list], Any]


class StageKind:
    name: str
    chat_model: bool = False
    engine: str = "nanotron"
    # The nanotron config class that parses nanotron_dataset's section (our entry point finds the
    # kind of a config by it).
    nanotron_dataset_class: str

    def nanotron_dataset(self, stage: "StagePlan") -> dict[str, Any]:
        raise NotImplementedError

    def engine_data(self, trainer, dataset_args, n_samples: int) -> tuple[Rows, Collate]:
        """`trainer` is our nanotron StageTrainer (sequence length, seed, tokenizer, model, parallel context)."""
        raise NotImplementedError

    def local_data(self, recipe: "Recipe", stage: "StagePlan", tokenizer) -> tuple[Rows, Collate]:
        raise NotImplementedError

    def data_stats(self, rows: Rows) -> dict[str, Any]:
        """What the stage's summary records about the rows it trained on."""
        return {}

    def trainer(self, spec: "StageSpec") -> tuple[type, type] | None:
        """(trainer class, arguments class) when the kind trains with its own transformers Trainer
        subclass (TRL's); None: the local backend's RecipeTrainer over local_data's rows."""
        return None

    def trainer_settings(self, recipe: "Recipe", spec: "StageSpec") -> dict[str, Any]:
        return {}

    def prepare_data(self, recipe: "Recipe", spec: "StageSpec", say: Callable[[str], None]) -> bool:
        """Build the stage's own dataset if it has one and it is not up to date; False when the kind has none."""
        return False


def own_dataset(recipe: "Recipe", spec: "StageSpec", say: Callable[[str], None], **settings: Any) -> tuple[Path, dict] | None:
    """(folder, the provenance its manifest records) of a stage's own dataset that must be built, or
    None, said, when the folder's manifest already has the fingerprint of `settings` and the tokenizer."""
    out = Path(spec.data_folder(recipe))
    if spec.data.hf is None:  # a local file edited or regenerated in place is new data (a hub dataset: its revision)
        settings["files_sha256"] = files_sha256(local_files(spec.data.path)[0], matching_files(spec.data.path))
    fp = fingerprint(recipe, **settings)
    if (read_manifest(out) or {}).get("fingerprint") == fp:
        say(f"{spec.name}: up to date ({out})")
        return None
    return out, {"recipe": recipe.name, "recipe_hash": recipe.hash(), "fingerprint": fp, "tokenizer": tokenizer_folder(recipe),
                 "data": spec.data.model_dump(mode="json")}
