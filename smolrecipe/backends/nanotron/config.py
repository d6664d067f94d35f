"""Recipe plan -> nanotron YAML, one file per stage, in the schema of the pinned nanotron commit.

Every field of every section is written out, defaults included, the way nanotron's own
`Config.save_as_yaml` does: the file then says exactly what will run, and a change of defaults
in a later nanotron cannot silently change it. `smolrecipe.backends.nanotron.schema` is the independent
description of what that commit accepts; the tests hold the two against each other.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import yaml

from smolrecipe import without_checkout
from smolrecipe.backends.arguments import stage_arguments
from smolrecipe.kinds import kind_of
from smolrecipe.recipe.plan import RunPlan, StagePlan
from smolrecipe.recipe.schema import Recipe

NANOTRON_COMMIT = "2411b022a75fb7f7561a1bb4166706da5e1b76de"


def render_stage(plan: RunPlan, stage: StagePlan) -> dict[str, Any]:
    """The stage's config: nanotron's, or for a kind TRL trains, what the TRL job trains with."""
    if kind_of(stage.kind).engine == "trl":
        return render_trl_stage(plan, stage)
    recipe = plan.recipe
    return {
        "general": _general(recipe, stage),
        "parallelism": _parallelism(recipe),
        "model": _model(recipe, stage),
        "tokenizer": {
            "tokenizer_name_or_path": recipe.tokenizer.path,
            "tokenizer_revision": None,
            "tokenizer_max_length": None,
        },
        "checkpoints": {
            "checkpoints_path": stage.checkpoints_path,
            "checkpoint_interval": recipe.training.checkpoint_interval,
            "save_initial_state": False,
            "save_final_state": True,
            "resume_checkpoint_path": stage.resume_checkpoint_path,
            "load_lr_scheduler": stage.load_lr_scheduler,
            "load_optimizer": stage.load_optimizer,
            "checkpoints_path_is_shared_file_system": False,
        },
        "logging": {"log_level": "info", "log_level_replica": "info", "iteration_step_info_interval": 1},
        "metrics_logging": None,
        "tokens": {
            "sequence_length": stage.sequence_length,
            "train_steps": stage.train_steps,
            "micro_batch_size": stage.micro_batch_size,
            "batch_accumulation_per_replica": stage.grad_accumulation,
            "val_check_interval": -1,
            "limit_val_batches": 0,
            "limit_test_batches": 0,
        },
        "optimizer": _optimizer(recipe, stage),
        "data_stages": [
            {
                "name": stage.name,
                "start_training_step": 1,
                "data": {
                    "dataset": kind_of(stage.kind).nanotron_dataset(stage),
                    "seed": recipe.training.seed,
                    "num_loading_workers": recipe.training.num_loading_workers,
                },
                "sequence_length": None,
            }
        ],
        "profiler": None,
        "lighteval": None,
        "s3_upload": None,
    }


def _general(recipe: Recipe, stage: StagePlan) -> dict[str, Any]:
    return {
        "project": recipe.tracking.project,
        "run": f"{recipe.name}-{stage.name}",
        "seed": recipe.training.seed,
        "step": None,
        "consumed_train_samples": None,
        "benchmark_csv_path": None,
        "ignore_sanity_checks": True,
    }


def _parallelism(recipe: Recipe) -> dict[str, Any]:
    par = recipe.parallelism
    return {
        "dp": par.dp,
        "pp": par.pp,
        "tp": par.tp,
        "pp_engine": "1f1b",
        "tp_mode": "REDUCE_SCATTER" if par.tp > 1 else "ALL_REDUCE",
        "tp_linear_async_communication": par.tp > 1,
        "recompute_layer": recipe.training.recompute_layer,
        "tp_recompute_allgather": True,
        "expert_parallel_size": 1,
        "context_parallel_size": 1,
    }


def _model(recipe: Recipe, stage: StagePlan) -> dict[str, Any]:
    """The model section at the stage's context: a context extension's RoPE base and length, kept by the stages after it."""
    m, tok = recipe.model, recipe.tokenizer
    return {
        "model_config": {
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "hidden_act": m.hidden_act,
            "hidden_size": m.hidden_size,
            "initializer_range": float(m.init_std),
            "intermediate_size": m.intermediate_size,
            "is_llama_config": True,
            "max_position_embeddings": stage.max_position,
            "num_attention_heads": m.num_attention_heads,
            "num_hidden_layers": m.num_layers,
            "attention_bias": False,
            "num_key_value_heads": m.num_key_value_heads,
            "pad_token_id": None,
            "pretraining_tp": 1,
            "rms_norm_eps": float(m.rms_norm_eps),
            "rope_scaling": None,
            "rope_theta": float(stage.rope_theta),
            "rope_interleaved": m.rope_interleaved,
            "tie_word_embeddings": m.tie_word_embeddings,
            "use_cache": True,
            "vocab_size": m.vocab_size,
            "_attn_implementation": m.attn_implementation,
            "z_loss_enabled": False,
            "z_loss_coefficient": 0.0001,
        },
        "init_method": {"std": float(m.init_std), "scaling_method": "NUM_LAYERS"},
        "dtype": m.dtype,
        "make_vocab_size_divisible_by": 1,
        "ddp_bucket_cap_mb": 25,
    }


def _optimizer(recipe: Recipe, stage: StagePlan) -> dict[str, Any]:
    opt, lr = recipe.training.optimizer, stage.lr
    return {
        "optimizer_factory": {
            "adam_eps": float(opt.eps),
            "adam_beta1": float(opt.beta1),
            "adam_beta2": float(opt.beta2),
            "torch_adam_is_fused": opt.fused,
            "name": "adamW",
        },
        "zero_stage": opt.zero_stage,
        "weight_decay": float(opt.weight_decay),
        "clip_grad": None if opt.clip_grad is None else float(opt.clip_grad),
        "accumulate_grad_in_fp32": opt.accumulate_grad_in_fp32,
        "learning_rate_scheduler": {
            "learning_rate": float(lr.peak),
            "lr_warmup_steps": lr.warmup_steps,
            # nanotron's linear warmup over 0 steps gives step 1 an LR of 0 (0/max(0,1)); a
            # constant one starts at the peak, which is what "no warmup" means.
            "lr_warmup_style": lr.warmup_style if lr.warmup_steps else "constant",
            "lr_decay_style": lr.decay,
            "lr_decay_steps": stage.lr_decay_steps,
            "lr_decay_starting_step": lr.decay_starting_step,
            "min_decay_lr": float(lr.min),
        },
        "weight_decay_exclude_named_params": [],
    }


def render_trl_stage(plan: RunPlan, stage: StagePlan) -> dict[str, Any]:
    """A stage of a "trl" kind (preference) as its cluster job trains it: TRL's trainer under torchrun,
    one process per GPU, from the parent's final checkpoint converted to a transformers folder.
    `arguments` are the TRL config's (smolrecipe.backends.arguments + the method's own); the LR
    schedule is the plan's (smolrecipe.backends.lr_schedule replaces the trainer's own)."""
    recipe = plan.recipe
    spec, kind = recipe.stage(stage.name), kind_of(stage.kind)
    module, trainer, arguments = kind.trainer_names(spec)
    processes = recipe.parallelism.world
    cuda = recipe.cluster.gpus_per_node > 0
    settings = stage_arguments(recipe, stage, processes, cuda=cuda, bf16=cuda and recipe.model.dtype == "bfloat16")
    return {
        "engine": "trl",
        "trainer": f"{module}.{trainer}",
        "arguments_class": f"{module}.{arguments}",
        "init_from": stage.resume_checkpoint_path,
        "reference_model": stage.resume_checkpoint_path if getattr(spec, "method", None) == "dpo" else None,
        "dataset": stage.dataset,
        "processes": processes,
        "lr_schedule": {"peak": float(stage.lr.peak), "warmup_steps": stage.lr.warmup_steps, "warmup_style": stage.lr.warmup_style,
                        "decay": stage.lr.decay, "decay_start": stage.lr.decay_start, "decay_steps": stage.lr_decay_steps,
                        "min": float(stage.lr.min)},
        "arguments": {**settings, **kind.trainer_settings(recipe, spec), "remove_unused_columns": True},
    }


def to_yaml(config: dict[str, Any], header: str) -> str:
    body = yaml.safe_dump(config, sort_keys=False, default_flow_style=False, width=100_000)
    comments = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return comments + body


def render_files(plan: RunPlan, configs: dict[str, dict[str, Any]], recipe_path: str, recipe_hash: str) -> dict[str, str]:
    """{file name: YAML text} for the rendered config of every stage, each with a header naming its source."""
    files = {}
    for stage in plan.stages:
        engine = (f"nanotron commit {NANOTRON_COMMIT[:12]}" if kind_of(stage.kind).engine == "nanotron" else
                  f"Not a nanotron config: TRL trains this stage ({configs[stage.name].get('trainer')}), with these arguments")
        header = (
            f"Generated by tools/make_config.py from {recipe_path} (recipe hash {recipe_hash}).\n"
            f"Do not edit: change the recipe and regenerate. {engine}.\n"
            f"{stage.name}: {stage.train_steps:,} steps x {stage.tokens_per_step:,} tokens = {stage.tokens:,} tokens"
        )
        files[f"{stage.name}.yaml"] = to_yaml(configs[stage.name], header)
    return files


def stage_fingerprint(plan: RunPlan, stage: StagePlan) -> str:
    """What a stage's result depends on: its rendered nanotron config (model, data, weights, batch,
    optimizer, schedule) and, through the chain, its parent's. Editing the SFT stage of a recipe
    therefore leaves the finished pretraining stages valid; moving the checkout does not change it."""
    parent = stage_fingerprint(plan, plan.stage(stage.init_from)) if stage.init_from else ""
    config = without_checkout(json.dumps(render_stage(plan, stage), sort_keys=True, default=str))
    return hashlib.sha256(f"{parent}|{config}".encode()).hexdigest()[:16]
