"""What nanotron's YAML parser accepts at the pinned commit, written down from reading its source
(`src/nanotron/config/{config,models_config,parallelism_config,utils_config}.py` at 2411b022).

nanotron parses a config with `dacite.from_dict(..., strict=True)` and then runs each dataclass's
`__post_init__`. This module checks a config dict the same way without importing nanotron (which
needs CUDA): unknown keys, missing required fields, value types, the order in which a Union is tried
(the first class that parses wins: an SFT dataset section without an SFT-only key loads as plain
pretraining text), and the `__post_init__` rules. Where dacite is lax we are strict on purpose
(a YAML `true` is not accepted for an int). `check_config` returns a list of problems; empty means nanotron would load it.
`python tools/make_config.py --check` additionally runs nanotron's own parser where it is installed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

# ---------------------------------------------------------------------------------------------
# A small type language for the fields.


@dataclass(frozen=True)
class T:
    """A leaf type: `check` says whether a YAML value is acceptable."""

    name: str
    check: Callable[[Any], bool]


def _is_int(v):  # bool is an int in Python, and dacite lets it through; we are stricter
    return isinstance(v, int) and not isinstance(v, bool)


INT = T("int", _is_int)
FLOAT = T("float", lambda v: isinstance(v, float) or _is_int(v))  # dacite accepts an int for a float
BOOL = T("bool", lambda v: isinstance(v, bool))
STR = T("str", lambda v: isinstance(v, str))
DICT = T("dict", lambda v: isinstance(v, dict))
ANY = T("any", lambda v: True)
PATH = T("path", lambda v: isinstance(v, str))  # Path / xPath fields are cast from str
LIST = T("list", lambda v: isinstance(v, list))

DTYPES = ("float32", "float64", "complex64", "complex128", "float16", "bfloat16", "uint8", "int8",
          "int16", "int32", "int64", "bool")
PP_ENGINES = ("afab", "1f1b")
TP_MODES = ("ALL_REDUCE", "REDUCE_SCATTER")
INIT_SCALING = ("NONE", "NUM_LAYERS", "LAYER_INDEX", "MODEL_SCALE")
ATTENTION = ("flash_attention_2", "flex_attention", "sdpa", "ring_flash_triton", "ring", "llama3_ring_attention")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical", "passive")


def one_of(name: str, values: tuple) -> T:
    # Enum fields go through type hooks that upper-case the string (TP mode, init scaling).
    return T(f"{name}{list(values)}", lambda v: isinstance(v, str) and (v in values or v.upper() in values))


@dataclass(frozen=True)
class Opt:
    inner: Any


@dataclass(frozen=True)
class ListOf:
    inner: Any


@dataclass(frozen=True)
class UnionOf:
    options: tuple


@dataclass(frozen=True)
class F:
    type: Any
    required: bool = False


@dataclass(frozen=True)
class Section:
    """One nanotron dataclass: its fields in declaration order and its __post_init__ checks."""

    name: str
    fields: dict[str, F]
    rules: tuple[Callable[[dict], Optional[str]], ...] = field(default=())


# ---------------------------------------------------------------------------------------------
# The dataclasses, field by field.

GENERAL = Section("GeneralArgs", {
    "project": F(STR, True), "run": F(Opt(STR)), "seed": F(Opt(INT)), "step": F(Opt(INT)),
    "consumed_train_samples": F(Opt(INT)), "benchmark_csv_path": F(Opt(PATH)), "ignore_sanity_checks": F(BOOL),
})

PARALLELISM = Section("ParallelismArgs", {
    "dp": F(INT, True), "pp": F(INT, True), "tp": F(INT, True),
    "pp_engine": F(Opt(one_of("pp_engine", PP_ENGINES))), "tp_mode": F(Opt(one_of("tp_mode", TP_MODES))),
    "tp_linear_async_communication": F(Opt(BOOL)), "recompute_layer": F(BOOL), "tp_recompute_allgather": F(BOOL),
    "expert_parallel_size": F(INT), "context_parallel_size": F(INT),
})

LLAMA = Section("LlamaConfig", {
    "bos_token_id": F(INT), "eos_token_id": F(INT), "hidden_act": F(STR), "hidden_size": F(INT),
    "initializer_range": F(FLOAT), "intermediate_size": F(INT), "is_llama_config": F(BOOL),
    "max_position_embeddings": F(INT), "num_attention_heads": F(INT), "num_hidden_layers": F(INT),
    "attention_bias": F(BOOL), "num_key_value_heads": F(Opt(INT)), "pad_token_id": F(Opt(INT)),
    "pretraining_tp": F(INT), "rms_norm_eps": F(FLOAT), "rope_scaling": F(Opt(DICT)), "rope_theta": F(FLOAT),
    "rope_interleaved": F(BOOL), "tie_word_embeddings": F(BOOL), "use_cache": F(BOOL), "vocab_size": F(INT),
    "_attn_implementation": F(Opt(one_of("attention", ATTENTION))), "z_loss_enabled": F(BOOL),
    "z_loss_coefficient": F(FLOAT),
})

RANDOM_INIT = Section("RandomInit", {"std": F(FLOAT, True), "scaling_method": F(one_of("scaling", INIT_SCALING))})
SPECTRAL_MUP_INIT = Section("SpectralMupInit", {"use_mup": F(BOOL, True)})
EXISTING_INIT = Section("ExistingCheckpointInit", {"path": F(PATH, True)})

MODEL = Section("ModelArgs", {
    # Union[LlamaConfig, Starcoder2Config, Qwen2Config, Any]: only LlamaConfig is described here;
    # `is_llama_config` is the key that makes dacite pick it.
    "model_config": F(UnionOf((LLAMA,)), True),
    "init_method": F(UnionOf((RANDOM_INIT, SPECTRAL_MUP_INIT, EXISTING_INIT)), True),
    "dtype": F(Opt(one_of("dtype", DTYPES))), "make_vocab_size_divisible_by": F(INT), "ddp_bucket_cap_mb": F(INT),
})

TOKENIZER = Section("TokenizerArgs", {
    "tokenizer_name_or_path": F(Opt(STR)), "tokenizer_revision": F(Opt(STR)), "tokenizer_max_length": F(Opt(INT)),
})

CHECKPOINTS = Section("CheckpointsArgs", {
    "checkpoints_path": F(PATH, True), "checkpoint_interval": F(INT, True), "save_initial_state": F(Opt(BOOL)),
    "save_final_state": F(Opt(BOOL)), "resume_checkpoint_path": F(Opt(PATH)), "load_lr_scheduler": F(Opt(BOOL)),
    "load_optimizer": F(Opt(BOOL)), "checkpoints_path_is_shared_file_system": F(Opt(BOOL)),
})

LOGGING = Section("LoggingArgs", {
    "log_level": F(Opt(one_of("log_level", LOG_LEVELS))), "log_level_replica": F(Opt(one_of("log_level", LOG_LEVELS))),
    "iteration_step_info_interval": F(Opt(INT)),
})

METRICS_LOGGING = Section("MetricsLoggingArgs", {"log_level": F(INT), "log_detail_interval": F(INT)}, rules=(
    lambda d: None if d.get("log_level", 0) in (0, 1) else "metrics_logging.log_level must be 0 or 1",
    lambda d: None if d.get("log_detail_interval", 10) > 0 else "metrics_logging.log_detail_interval must be > 0",
))

TOKENS = Section("TokensArgs", {
    "sequence_length": F(INT, True), "train_steps": F(INT, True), "micro_batch_size": F(INT, True),
    "batch_accumulation_per_replica": F(INT, True), "val_check_interval": F(Opt(INT)),
    "limit_val_batches": F(Opt(INT)), "limit_test_batches": F(Opt(INT)),
})

LR_SCHEDULER = Section("LRSchedulerArgs", {
    "learning_rate": F(FLOAT, True), "lr_warmup_steps": F(INT),
    # Typed `str = None` in nanotron; its __post_init__ rejects None for the warmup style
    # (the check runs before the default is filled in), so both must be written out.
    "lr_warmup_style": F(STR), "lr_decay_style": F(STR),
    "lr_decay_steps": F(Opt(INT)), "lr_decay_starting_step": F(Opt(INT)), "min_decay_lr": F(FLOAT),
}, rules=(
    lambda d: None if d.get("lr_warmup_style") in ("linear", "constant")
    else f"lr_warmup_style must be linear or constant, not {d.get('lr_warmup_style')!r}",
    lambda d: None if d.get("lr_decay_style", "linear") in ("linear", "cosine", "1-sqrt")
    else f"lr_decay_style must be linear, cosine or 1-sqrt, not {d.get('lr_decay_style')!r}",
))

SGD = Section("SGDOptimizerArgs", {"name": F(STR)})
ADAMW = Section("AdamWOptimizerArgs", {
    "adam_eps": F(FLOAT, True), "adam_beta1": F(FLOAT, True), "adam_beta2": F(FLOAT, True),
    "torch_adam_is_fused": F(BOOL, True), "name": F(STR),
})

OPTIMIZER = Section("OptimizerArgs", {
    "optimizer_factory": F(UnionOf((SGD, ADAMW)), True), "zero_stage": F(INT, True), "weight_decay": F(FLOAT, True),
    "clip_grad": F(Opt(FLOAT), True), "accumulate_grad_in_fp32": F(BOOL, True),
    "learning_rate_scheduler": F(LR_SCHEDULER, True), "weight_decay_exclude_named_params": F(Opt(ListOf(STR))),
})

PRETRAIN_DATASET = Section("PretrainDatasetsArgs", {
    "hf_dataset_or_datasets": F(UnionOf((STR, LIST, DICT)), True), "hf_dataset_splits": F(Opt(UnionOf((STR, LIST)))),
    "hf_dataset_config_name": F(Opt(STR)), "dataset_processing_num_proc_per_process": F(Opt(INT)),
    "dataset_overwrite_cache": F(Opt(BOOL)), "text_column_name": F(Opt(STR)),
})

NANOSET_DATASET = Section("NanosetDatasetsArgs", {
    "dataset_folder": F(UnionOf((STR, ListOf(STR))), True), "dataset_weights": F(Opt(ListOf(FLOAT))),
    "dataset_read_path": F(Opt(UnionOf((STR, ListOf(STR))))), "tokenizer_name": F(Opt(STR)),
    "vocab_size": F(Opt(INT)), "token_size_in_bytes": F(Opt(INT)), "return_positions": F(Opt(BOOL)),
    "skip_in_stream": F(Opt(BOOL)), "pad_samples_to_global_batch_size": F(Opt(BOOL)),
    "dataset_max_tokens": F(Opt(ListOf(INT))), "shuffle_files": F(Opt(BOOL)), "use_old_brrr_dataloader": F(Opt(BOOL)),
}, rules=(
    lambda d: None if not isinstance(d.get("dataset_folder"), list) or d.get("dataset_weights") is None
    or len(d["dataset_weights"]) == len(d["dataset_folder"])
    else f"{len(d['dataset_weights'])} dataset_weights for {len(d['dataset_folder'])} dataset_folder entries",
    lambda d: None if d.get("dataset_read_path") is None or len(d["dataset_read_path"]) == len(d["dataset_folder"])
    else "dataset_read_path and dataset_folder differ in length",
))

SFT_DATASET = Section("SFTDatasetsArgs", {
    "hf_dataset_or_datasets": F(UnionOf((STR, LIST, DICT)), True), "hf_dataset_splits": F(Opt(UnionOf((STR, LIST)))),
    "hf_dataset_config_name": F(Opt(STR)), "dataset_processing_num_proc_per_process": F(Opt(INT)),
    "dataset_overwrite_cache": F(Opt(BOOL)), "sft_dataloader": F(Opt(BOOL)), "debug_max_samples": F(Opt(INT)),
})

DATA = Section("DataArgs", {
    # Tried in this order; the first class that parses strictly is the one nanotron uses.
    "dataset": F(Opt(UnionOf((PRETRAIN_DATASET, NANOSET_DATASET, SFT_DATASET))), True),
    "seed": F(Opt(INT), True), "num_loading_workers": F(Opt(INT)),
})

DATA_STAGE = Section("DatasetStageArgs", {
    "name": F(STR, True), "start_training_step": F(INT, True), "data": F(DATA, True),
    "sequence_length": F(Opt(INT)),
}, rules=(
    lambda d: None if d.get("start_training_step", 0) >= 0 else "start_training_step must be >= 0",
))


def _config_rules(d: dict) -> list[Optional[str]]:
    """Config.__post_init__: data stage ordering and attention-head arithmetic."""
    out: list[Optional[str]] = []
    stages = d.get("data_stages") or []
    names = [s.get("name") for s in stages]
    starts = [s.get("start_training_step") for s in stages]
    if stages:
        if 1 not in starts:
            out.append("a data stage must start at step 1")
        if len(set(names)) != len(names):
            out.append(f"data stage names must be unique, got {names}")
        if len(set(starts)) != len(starts):
            out.append(f"data stage start steps must be unique, got {starts}")
    mc = (d.get("model") or {}).get("model_config") or {}
    par = d.get("parallelism") or {}
    heads, kv, tp = mc.get("num_attention_heads", 32), mc.get("num_key_value_heads"), par.get("tp", 1)
    kv = heads if kv is None else kv
    if heads % tp:
        out.append(f"num_attention_heads ({heads}) must be divisible by tp ({tp})")
    if heads < kv:
        out.append(f"num_attention_heads ({heads}) must be >= num_key_value_heads ({kv})")
    if kv < tp:
        out.append(f"num_key_value_heads ({kv}) must be >= tp ({tp})")
    if kv and heads % kv:
        out.append(f"num_attention_heads ({heads}) must be divisible by num_key_value_heads ({kv})")
    return out


CONFIG = Section("Config", {
    "general": F(GENERAL, True), "parallelism": F(PARALLELISM, True), "model": F(MODEL, True),
    "tokenizer": F(Opt(TOKENIZER)), "checkpoints": F(Opt(CHECKPOINTS)), "logging": F(Opt(LOGGING)),
    "metrics_logging": F(Opt(METRICS_LOGGING)), "tokens": F(Opt(TOKENS)), "optimizer": F(Opt(OPTIMIZER)),
    "data_stages": F(Opt(ListOf(DATA_STAGE))),
    # Sections we never fill; their inner schema is not needed to accept `null`.
    "profiler": F(Opt(DICT)), "lighteval": F(Opt(DICT)), "s3_upload": F(Opt(DICT)),
})


# ---------------------------------------------------------------------------------------------
# The checker.


def check_config(config: dict) -> list[str]:
    """Problems nanotron's parser would raise for this config dict (empty list: it loads)."""
    problems = _check(CONFIG, config, "")
    if not problems:
        problems = [p for p in _config_rules(config) if p]
    return problems


def resolved_classes(config: dict) -> dict[str, str]:
    """Which dataclass each Union field resolves to, as nanotron's parser would pick it."""
    out = {}
    for i, stage in enumerate(config.get("data_stages") or []):
        dataset = (stage.get("data") or {}).get("dataset")
        if dataset is not None:
            out[f"data_stages[{i}].data.dataset"] = _first_match(DATA.fields["dataset"].type.inner, dataset)
    out["model.model_config"] = _first_match(MODEL.fields["model_config"].type, config["model"]["model_config"])
    out["model.init_method"] = _first_match(MODEL.fields["init_method"].type, config["model"]["init_method"])
    out["optimizer.optimizer_factory"] = _first_match(
        OPTIMIZER.fields["optimizer_factory"].type, config["optimizer"]["optimizer_factory"]
    )
    return out


def _first_match(union: UnionOf, value: Any) -> Optional[str]:
    for option in union.options:
        if not _check(option, value, "", rules=False):
            return option.name
    return None


def _check(spec: Any, value: Any, where: str, rules: bool = True) -> list[str]:
    if isinstance(spec, Opt):
        return [] if value is None else _check(spec.inner, value, where, rules)
    if isinstance(spec, T):
        return [] if spec.check(value) else [f"{where or 'value'}: expected {spec.name}, got {value!r}"]
    if isinstance(spec, ListOf):
        if not isinstance(value, list):
            return [f"{where}: expected a list, got {value!r}"]
        return [p for i, v in enumerate(value) for p in _check(spec.inner, v, f"{where}[{i}]", rules)]
    if isinstance(spec, UnionOf):
        # dacite takes the first option that builds; a __post_init__ error of that option then
        # propagates (it is not a reason to try the next one), so rules run only on the winner.
        attempts = [(option, _check(option, value, where, rules=False)) for option in spec.options]
        for option, problems in attempts:
            if not problems:
                return _check(option, value, where, rules) if rules else []
        closest, problems = min(attempts, key=lambda a: len(a[1]))
        return [f"{p} (as {getattr(closest, 'name', closest)})" for p in problems]
    if isinstance(spec, Section):
        return _check_section(spec, value, where, rules)
    raise TypeError(spec)


def _check_section(section: Section, value: Any, where: str, rules: bool = True) -> list[str]:
    prefix = f"{where}." if where else ""
    if not isinstance(value, dict):
        return [f"{where or section.name}: expected a mapping for {section.name}, got {value!r}"]
    problems = [f"{prefix}{key}: unknown key for {section.name}" for key in value if key not in section.fields]
    for name, f in section.fields.items():
        if name not in value:
            if f.required:
                problems.append(f"{prefix}{name}: missing (required by {section.name})")
            continue
        problems += _check(f.type, value[name], f"{prefix}{name}", rules)
    if rules and not problems:
        problems += [f"{prefix.rstrip('.') or section.name}: {p}" for rule in section.rules if (p := rule(value))]
    return problems
