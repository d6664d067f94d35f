"""A stage's transformers TrainingArguments (or TRL's subclass of them) as plain data.

The local backend trains every stage with them; on the cluster, a stage of a "trl" kind
(preference) is trained with them under torchrun, and its rendered config file records them
(smolrecipe.backends.nanotron.config.render_stage). One function, so the file says what runs.
No torch here: the configs render on any machine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from smolrecipe.errors import UserError

if TYPE_CHECKING:
    from smolrecipe.recipe.plan import StagePlan
    from smolrecipe.recipe.schema import Recipe


def stage_arguments(recipe: "Recipe", stage: "StagePlan", processes: int = 1, cuda: bool = False,
                    bf16: bool = False) -> dict[str, Any]:
    """The arguments of the stage's trainer, `processes` data-parallel ranks sharing the plan's
    global batch (one process on one device does the work of them all)."""
    opt = recipe.training.optimizer
    per_rank = stage.micro_batch_size * processes
    if stage.global_batch % per_rank:
        raise UserError(f"{stage.name}.micro_batch_size", f"the global batch of {stage.global_batch} sequences is not "
                        f"a whole number of micro-batches of {stage.micro_batch_size} on {processes} process(es)",
                        "pick a micro_batch_size and grad_accumulation whose product with the GPUs is the global batch")
    return dict(
        max_steps=stage.train_steps,
        per_device_train_batch_size=stage.micro_batch_size,
        gradient_accumulation_steps=stage.global_batch // per_rank,
        learning_rate=stage.lr.peak, weight_decay=opt.weight_decay, adam_beta1=opt.beta1, adam_beta2=opt.beta2,
        adam_epsilon=opt.eps, max_grad_norm=opt.clip_grad if opt.clip_grad is not None else 0.0,
        optim="adamw_torch_fused" if opt.fused and cuda else "adamw_torch",
        save_strategy="steps", save_steps=recipe.training.checkpoint_interval, save_only_model=False,
        logging_strategy="steps", logging_steps=1 if stage.train_steps <= 2000 else 10,
        logging_first_step=True, seed=recipe.training.seed, data_seed=recipe.training.seed,
        use_cpu=not cuda, bf16=bf16, dataloader_num_workers=0, remove_unused_columns=False,
        disable_tqdm=True, logging_nan_inf_filter=False,  # log the loss as it is (as nanotron does), no GPU sync
    )
