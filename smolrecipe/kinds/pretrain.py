"""Pretraining: next-token prediction on the recipe's sources, blended by the plan's weights.

Both backends read the same nanoset folders in the same order (smolrecipe.data.batches):
Nanoset's greedy blend, the Megatron sampler's order, attention across documents.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from smolrecipe.data.batches import PretrainSamples, collate_pretrain
from smolrecipe.kinds.base import StageKind

if TYPE_CHECKING:
    from smolrecipe.recipe.plan import StagePlan
    from smolrecipe.recipe.schema import Recipe


class Pretrain(StageKind):
    name = "pretrain"
    nanotron_dataset_class = "NanosetDatasetsArgs"

    def nanotron_dataset(self, stage: "StagePlan") -> dict[str, Any]:
        return {
            "dataset_folder": [fw.folder for fw in stage.weights],
            "dataset_weights": [fw.weight for fw in stage.weights],
            "dataset_read_path": None,
            # Left empty on purpose: nanotron fills these from each folder's *.metadata file.
            "tokenizer_name": None,
            "vocab_size": None,
            "token_size_in_bytes": None,
            "return_positions": True,
            "skip_in_stream": False,
            "pad_samples_to_global_batch_size": False,
            "dataset_max_tokens": None,
            "shuffle_files": False,
            "use_old_brrr_dataloader": False,
        }

    def engine_data(self, trainer, dataset_args, n_samples: int):
        from nanotron.data.clm_collator import DataCollatorForCLM  # the cluster engine; not on CPU installs

        rows = PretrainSamples(list(dataset_args.dataset_folder), list(dataset_args.dataset_weights), n_samples,
                               trainer.sequence_length, trainer.data_stage.data.seed)
        collate = DataCollatorForCLM(sequence_length=trainer.sequence_length, input_pp_rank=trainer.unwrapped_model.input_pp_rank,
                                     output_pp_rank=trainer.unwrapped_model.output_pp_rank,
                                     parallel_context=trainer.parallel_context)
        return rows, collate

    def local_data(self, recipe: "Recipe", stage: "StagePlan", tokenizer):
        return PretrainSamples.for_stage(stage, stage.sequence_length, recipe.training.seed), collate_pretrain

    def data_stats(self, rows: PretrainSamples) -> dict[str, Any]:
        return {"samples_per_folder": rows.samples_per_folder()}


KIND = Pretrain()
