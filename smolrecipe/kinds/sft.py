"""Supervised fine-tuning: chats rendered with the recipe's chat template, loss on the assistant's turns.

The stage's dataset is prepared from its `data:` source into nanotron's prompt/completion records
(smolrecipe.data.chats, `tools/prepare_data.py RECIPE --sft`); both backends train on right-padded
rows of those records (smolrecipe.data.batches.SFTRows).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

from smolrecipe.data.batches import SFTRows, collate_sft, sft_batch
from smolrecipe.data.chats import check_sft_source, read_conversations, write_sft_dataset
from smolrecipe.data.pipeline import tokenizer_folder
from smolrecipe.data.tokenizer import load_tokenizer
from smolrecipe.kinds.base import StageKind, own_dataset

if TYPE_CHECKING:
    from smolrecipe.recipe.plan import StagePlan
    from smolrecipe.recipe.schema import Recipe, SFTStage


class SFT(StageKind):
    name = "sft"
    chat_model = True
    nanotron_dataset_class = "SFTDatasetsArgs"

    def nanotron_dataset(self, stage: "StagePlan") -> dict[str, Any]:
        return {
            "hf_dataset_or_datasets": stage.dataset,
            "hf_dataset_splits": "train",
            "hf_dataset_config_name": None,
            "dataset_processing_num_proc_per_process": 1,
            "dataset_overwrite_cache": False,
            # An SFT-only key: nanotron's parser tries PretrainDatasetsArgs first, and without a key
            # that class lacks, this section would silently load as plain pretraining text.
            "sft_dataloader": True,
            "debug_max_samples": None,
        }

    def engine_data(self, trainer, dataset_args, n_samples: int):
        from datasets import load_dataset
        from transformers import AutoTokenizer

        records = load_dataset(dataset_args.hf_dataset_or_datasets, split=dataset_args.hf_dataset_splits)
        tokenizer = AutoTokenizer.from_pretrained(trainer.config.tokenizer.tokenizer_name_or_path)
        return SFTRows(records, tokenizer, trainer.sequence_length, n_samples), sft_batch

    def local_data(self, recipe: "Recipe", stage: "StagePlan", tokenizer):
        from datasets import load_dataset

        rows = SFTRows(load_dataset(stage.dataset, split="train"), tokenizer, recipe.training.sequence_length,
                       stage.train_steps * stage.global_batch)
        return rows, collate_sft

    def prepare_data(self, recipe: "Recipe", spec: "SFTStage", say: Callable[[str], None]) -> bool:
        build = own_dataset(recipe, spec, say, sft=spec.data.model_dump(mode="json"), max_tokens=recipe.training.sequence_length)
        if build is None:
            return True
        out, provenance = build
        check_sft_source(spec.data)
        tokenizer = load_tokenizer(tokenizer_folder(recipe))
        start = time.time()
        manifest = write_sft_dataset(read_conversations(spec.data), tokenizer, recipe.training.sequence_length, out, provenance)
        dropped = ", ".join(f"{k} {v:,}" for k, v in manifest["dropped"].items()) or "none"
        say(f"{spec.name}: {manifest['conversations']:,} conversations -> {manifest['kept']:,} kept, "
            f"{manifest['records']:,} prompt/completion records (dropped: {dropped}) -> {out} "
            f"in {time.time() - start:.1f}s")
        return True


KIND = SFT()
