"""Preference alignment: DPO or ORPO on prompt / chosen / rejected pairs, after SFT.

nanotron has no preference training, so on both backends the stage is trained by TRL's trainers
(DPO: `trl.DPOTrainer`, the reference model being the checkpoint the stage starts from; ORPO:
`trl.experimental.orpo.ORPOTrainer`, no reference model) over transformers checkpoints: locally in
the local backend's process, on the cluster under torchrun on the node's GPUs, from the SFT stage's
final checkpoint converted to a transformers folder (smolrecipe.backends.nanotron.backend).

The stage's dataset is prepared from its `data:` source into text pairs rendered with the recipe's
chat template (smolrecipe.data.preferences, `tools/prepare_data.py RECIPE --sft`).
"""

from __future__ import annotations

import importlib
import time
from typing import TYPE_CHECKING, Any, Callable

from smolrecipe.data.pipeline import tokenizer_folder
from smolrecipe.data.preferences import check_preference_source, read_pairs, write_preference_dataset
from smolrecipe.data.tokenizer import load_tokenizer
from smolrecipe.kinds.base import StageKind, own_dataset

if TYPE_CHECKING:
    from smolrecipe.recipe.plan import StagePlan
    from smolrecipe.recipe.schema import PreferenceStage, Recipe


TRAINERS = {"dpo": ("trl", "DPOTrainer", "DPOConfig"), "orpo": ("trl.experimental.orpo", "ORPOTrainer", "ORPOConfig")}


class Preference(StageKind):
    name = "preference"
    chat_model = True
    engine = "trl"
    nanotron_dataset_class = ""  # nanotron does not train it (engine "trl")

    def local_data(self, recipe: "Recipe", stage: "StagePlan", tokenizer):
        return read_pairs(stage.dataset, "train"), None  # TRL's trainers tokenize and collate the text pairs

    def data_stats(self, rows) -> dict[str, Any]:
        return {"pairs": len(rows)}

    def trainer_names(self, spec: "PreferenceStage") -> tuple[str, str, str]:
        """(module, trainer class, arguments class) of the stage's method in TRL (ORPO moved to
        trl.experimental in TRL 0.25; DPO stayed in trl)."""
        return TRAINERS[spec.method]

    def trainer(self, spec: "PreferenceStage") -> tuple[type, type]:
        """(trainer class, its arguments class) of the stage's method, from the installed TRL."""
        module, trainer, arguments = self.trainer_names(spec)
        loaded = importlib.import_module(module)
        return getattr(loaded, trainer), getattr(loaded, arguments)

    def trainer_settings(self, recipe: "Recipe", spec: "PreferenceStage") -> dict[str, Any]:
        """The method's own arguments, beside the shared TrainingArguments (smolrecipe.backends.local.train)."""
        # Recomputing activations trades speed for memory as `training.recompute_layer` says for every
        # stage (TRL's own default is on). The pairs were cut to max_length when prepared.
        settings: dict[str, Any] = {"beta": spec.beta, "max_length": spec.pair_length(recipe),
                                    "activation_checkpointing": recipe.training.recompute_layer}
        if spec.method == "dpo":
            settings["loss_type"] = spec.loss_types() or ["sigmoid"]
            if spec.loss_weights is not None:
                settings["loss_weights"] = list(spec.loss_weights)
        return settings

    def prepare_data(self, recipe: "Recipe", spec: "PreferenceStage", say: Callable[[str], None]) -> bool:
        max_tokens = spec.pair_length(recipe)
        build = own_dataset(recipe, spec, say, preference=spec.data.model_dump(mode="json"), max_tokens=max_tokens)
        if build is None:
            return True
        out, provenance = build
        where = f"{spec.name}.data"
        check_preference_source(spec.data, where)
        from smolrecipe.data.sources import iter_records

        tokenizer = load_tokenizer(tokenizer_folder(recipe))
        start = time.time()
        manifest = write_preference_dataset(iter_records(spec.data), spec.data, tokenizer, max_tokens, out, provenance, where=where)
        dropped = ", ".join(f"{k} {v:,}" for k, v in manifest["dropped"].items()) or "none"
        say(f"{spec.name}: {manifest['read']:,} pairs read -> {manifest['records']:,} to train on, {manifest['heldout']:,} "
            f"held out (dropped: {dropped}) -> {out} in {time.time() - start:.1f}s")
        return True


KIND = Preference()
