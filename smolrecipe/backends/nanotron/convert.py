"""nanotron checkpoint <-> Hugging Face transformers LLaMA folder.

    nanotron_to_hf(<checkpoints>/<step>, out, tokenizer=None, dtype=None)   # for lighteval, the hub, sampling
    hf_to_nanotron(hf_folder, out)        # a released model as a nanotron `model.init_method.path`

The nanotron side is the layout of the pinned commit (smolrecipe.backends.nanotron.config.NANOTRON_COMMIT), read
from its source: `serialize/weights.py` + `serialize/utils.py` (one safetensors file per parameter,
holding one tensor `data`, at `model/<parameter name with dots as folders>/model_<leaf>...`; a
tensor-parallel parameter's file name carries `_pp-rank-P-of-N_tp-rank-T-of-M` and safetensors metadata
`version` / `local_global_slices_pairs` / `unsharded_shape`, the others are `model_weight.safetensors`
with empty metadata), `serialize/metadata.py` (checkpoint_metadata.json), `trainer.py`
(`model_config.json` = the LlamaConfig dataclass as JSON; `config.yaml` next to it) and
`models/llama.py` (fused `qkv_proj` rows are q|k|v, `gate_up_proj` rows gate|up; with
`rope_interleaved: false` its RoPE is transformers' rotate_half, so no row permutation is needed).
Tied embeddings are one parameter saved under the embedding's name: no `lm_head` folder.

Only tp=1, pp=1 checkpoints are read or written (what the recipes train with); others are refused
with the way out. `rope_interleaved: true` is refused too (its q/k rows would need a permutation
that nothing here can check against nanotron). nanotron's LLaMA has no biases and no RoPE scaling,
so `attention_bias`, `rope_scaling` and `pretraining_tp` in model_config.json are ignored, and a
transformers config that uses them is refused.

Every input is checked (files present, readable, shapes as model_config.json says, no unknown
parameter) before anything is written; the output appears whole or not at all (atomic.staged_folder).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from smolrecipe.atomic import staged_folder
from smolrecipe.backends.hf_folder import read_json, weight_files
from smolrecipe.errors import UserError
from smolrecipe.runs import latest_step

CHECKPOINT_VERSION = "1.5"  # nanotron.constants.CHECKPOINT_VERSION at the pinned commit
SHARDED_FILE = "model_weight_pp-rank-0-of-1_tp-rank-0-of-1.safetensors"
PLAIN_FILE = "model_weight.safetensors"
_RANKS = re.compile(r"_pp-rank-(\d+)-of-(\d+)_tp-rank-(\d+)-of-(\d+)")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# nanotron's LlamaConfig (config/models_config.py): every field in order, with its default
NANOTRON_LLAMA_DEFAULTS: dict[str, Any] = {
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 11008,
    "is_llama_config": True,
    "max_position_embeddings": 2048,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "attention_bias": False,
    "num_key_value_heads": None,
    "pad_token_id": None,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-6,
    "rope_scaling": None,
    "rope_theta": 10000.0,
    "rope_interleaved": False,
    "tie_word_embeddings": False,
    "use_cache": True,
    "vocab_size": 32000,
    "_attn_implementation": "flash_attention_2",
    "z_loss_enabled": False,
    "z_loss_coefficient": 0.0001,
}


@dataclass(frozen=True)
class Param:
    """One nanotron parameter file and the transformers tensors it is made of (rows concatenated)."""

    folder: str  # under <checkpoint>/model/
    hf: tuple[str, ...]
    shape: tuple[int, ...]
    split_dim: int | None = None  # tensor-parallel split dimension; None: a replicated parameter (norms)
    chunks: tuple[int, ...] | None = None  # rows of each transformers tensor in a fused one

    @property
    def file(self) -> str:
        return SHARDED_FILE if self.split_dim is not None else PLAIN_FILE

    def pieces(self) -> list[tuple[str, tuple[int, ...]]]:
        rows = self.chunks or (self.shape[0],)
        return [(name, (n, *self.shape[1:])) for name, n in zip(self.hf, rows, strict=True)]

    def metadata(self) -> dict[str, str]:
        """What nanotron's save_weights writes at tp=1: the shard is the whole tensor, slice by slice."""
        if self.split_dim is None:
            return {}
        full = "None,None,None"
        if self.chunks is None:
            local = "|".join(full for _ in self.shape)
            glob = "|".join(f"0,{n},None" if d == self.split_dim else full for d, n in enumerate(self.shape))
            pairs = [f"{local}#{glob}"]
        else:  # fused projections: one slice pair per chunk (split_dim is 0)
            pairs, start = [], 0
            for n in self.chunks:
                rows = "|".join([f"{start},{start + n},None"] + [full] * (len(self.shape) - 1))
                pairs.append(f"{rows}#{rows}")
                start += n
        return {"version": CHECKPOINT_VERSION, "local_global_slices_pairs": ";".join(pairs),
                "unsharded_shape": str(tuple(self.shape))}


def parameters(cfg: dict[str, Any]) -> list[Param]:
    """Every parameter of a nanotron LLaMA with this model_config, in model order."""
    h, inter, vocab, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    heads = cfg["num_attention_heads"]
    q, kv = h, (cfg["num_key_value_heads"] or heads) * (h // heads)
    params = [Param("model/token_position_embeddings/pp_block/token_embedding", ("model.embed_tokens.weight",), (vocab, h), 0)]
    for i in range(layers):
        nt, hf = f"model/decoder/{i}/pp_block", f"model.layers.{i}"
        params += [
            Param(f"{nt}/input_layernorm", (f"{hf}.input_layernorm.weight",), (h,)),
            Param(f"{nt}/attn/qkv_proj", tuple(f"{hf}.self_attn.{p}_proj.weight" for p in "qkv"), (q + 2 * kv, h), 0, (q, kv, kv)),
            Param(f"{nt}/attn/o_proj", (f"{hf}.self_attn.o_proj.weight",), (h, q), 1),
            Param(f"{nt}/post_attention_layernorm", (f"{hf}.post_attention_layernorm.weight",), (h,)),
            Param(f"{nt}/mlp/gate_up_proj", (f"{hf}.mlp.gate_proj.weight", f"{hf}.mlp.up_proj.weight"), (2 * inter, h), 0, (inter, inter)),
            Param(f"{nt}/mlp/down_proj", (f"{hf}.mlp.down_proj.weight",), (h, inter), 1),
        ]
    params.append(Param("model/final_layer_norm/pp_block", ("model.norm.weight",), (h,)))
    if not cfg["tie_word_embeddings"]:
        params.append(Param("model/lm_head/pp_block", ("lm_head.weight",), (vocab, h), 0))
    return params


# ---------------------------------------------------------------------------------------- reading


def is_nanotron_checkpoint(path: Path) -> bool:
    path = Path(path)
    return (path / "model").is_dir() and ((path / "model_config.json").is_file() or (path / "checkpoint_metadata.json").is_file())


def resolve_checkpoint(path: Path) -> Path:
    """A step folder as given; a checkpoints folder means its newest step (its latest.txt, as nanotron reads it)."""
    path = Path(path)
    step = latest_step(path)
    if not is_nanotron_checkpoint(path) and step is not None:
        return path / str(step)
    return path


def _read_json(path: Path) -> dict | None:
    return read_json(path, fix="copy the file again from where the checkpoint was written")


def _read_yaml(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserError(str(path), f"not valid YAML ({err})", "copy the file again from where the checkpoint was written") from None
    return data if isinstance(data, dict) else None


def checkpoint_provenance(checkpoint: Path) -> dict[str, Any]:
    """recipe, stage, step and tokens seen of a nanotron checkpoint folder (None where unknown).

    Our configs name the run `<recipe>-<stage>`; nanotron writes the config (with `general.step`
    and `general.consumed_train_samples` filled in) to config.yaml and the training counters to
    checkpoint_metadata.json. The counters belong to the run: a stage that starts from the stage
    before without loading its LR schedule (our curriculum) counts from zero.
    """
    checkpoint = Path(checkpoint)
    config = _read_yaml(checkpoint / "config.yaml") or {}
    metas = (_read_json(checkpoint / "checkpoint_metadata.json") or {}).get("metas") or {}
    general = config.get("general") or {}
    recipe = stage = None
    if general.get("run"):
        match = re.fullmatch(r"(.+)-([a-z][a-z0-9_]*)", str(general["run"]))
        recipe, stage = match.groups() if match else (str(general["run"]), None)
    step = metas.get("last_train_step", general.get("step"))
    if step is None and checkpoint.name.isdigit():
        step = int(checkpoint.name)  # nanotron names each checkpoint folder after its step
    samples = metas.get("consumed_train_samples", general.get("consumed_train_samples"))
    sequence_length = (config.get("tokens") or {}).get("sequence_length")
    tokens = samples * sequence_length if samples is not None and sequence_length else metas.get("consumed_tokens_total")
    return {"recipe": recipe, "stage": stage, "step": step, "tokens_seen": tokens}


def _model_config(checkpoint: Path) -> dict[str, Any]:
    path = checkpoint / "model_config.json"
    cfg = _read_json(path)
    if cfg is None:  # nanotron writes both; config.yaml holds the same model_config
        path = checkpoint / "config.yaml"
        cfg = ((_read_yaml(path) or {}).get("model") or {}).get("model_config")
    if not cfg:
        raise UserError(str(checkpoint), "no model_config.json (nor model.model_config in config.yaml)",
                        "pass a nanotron checkpoint step folder, <checkpoints>/<step>/, copied whole")
    if not cfg.get("is_llama_config"):
        kind = next((k for k in cfg if k.startswith("is_") and k.endswith("_config") and cfg[k]), "no is_llama_config: true")
        raise UserError(str(path), f"not a LLaMA model config ({kind})", "this converter reads nanotron LlamaConfig checkpoints only")
    cfg = {**NANOTRON_LLAMA_DEFAULTS, **cfg}
    if cfg["num_key_value_heads"] is None:
        cfg["num_key_value_heads"] = cfg["num_attention_heads"]
    if cfg["rope_interleaved"]:
        raise UserError(str(path), "rope_interleaved is true: nanotron's interleaved RoPE differs from transformers' LLaMA",
                        "train with rope_interleaved: false (our recipes do); interleaved checkpoints are not converted")
    if cfg["hidden_size"] % cfg["num_attention_heads"] or cfg["num_attention_heads"] % cfg["num_key_value_heads"]:
        raise UserError(str(path), f"hidden_size {cfg['hidden_size']}, num_attention_heads {cfg['num_attention_heads']} and "
                        f"num_key_value_heads {cfg['num_key_value_heads']} do not divide", "fix the model config the run used")
    return cfg


def _refuse_parallel_layout(checkpoint: Path) -> None:
    """The shard file names say how a checkpoint was split; config.yaml says it too when files are missing."""
    where = checkpoint / "config.yaml"
    parallelism = (_read_yaml(where) or {}).get("parallelism") or {}
    tp, pp = parallelism.get("tp") or 1, parallelism.get("pp") or 1
    for path in (checkpoint / "model").rglob("*.safetensors"):
        ranks = _RANKS.search(path.name)
        if ranks and (int(ranks.group(2)) > 1 or int(ranks.group(4)) > 1):
            pp, tp, where = int(ranks.group(2)), int(ranks.group(4)), path
            break
    if tp > 1 or pp > 1:
        raise UserError(str(where), f"checkpoint saved with tp={tp}, pp={pp}; only tp=1, pp=1 checkpoints are converted",
                        "re-save it at tp=1, pp=1: nanotron's load_weights reshards on load, so resume the run with "
                        "parallelism tp: 1, pp: 1 and let it save a checkpoint")


def _read_tensor(path: Path, param: Param, implied_by: str) -> torch.Tensor:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            keys = list(fh.keys())
            if keys != ["data"]:
                raise UserError(str(path), f"holds tensors {keys}, nanotron writes exactly one named 'data'",
                                "copy the file again from the checkpoint that wrote it")
            tensor = fh.get_tensor("data")
    except UserError:
        raise
    except Exception as err:  # safetensors raises its own error type for truncated or garbled files
        raise UserError(str(path), f"not a readable safetensors file, truncated or corrupt ({err})",
                        "copy the checkpoint again (an interrupted copy leaves short files) or convert an earlier step") from None
    if tuple(tensor.shape) != param.shape:
        raise UserError(str(path), f"{param.folder} has shape {tuple(tensor.shape)}, but {implied_by} implies {param.shape}",
                        "use the model_config.json written with these weights; a checkpoint folder must not mix runs")
    return tensor


def _require_checkpoint(checkpoint: Path) -> None:
    if not is_nanotron_checkpoint(checkpoint):
        raise UserError(str(checkpoint), "not a nanotron checkpoint (no model/ folder with model_config.json or checkpoint_metadata.json)",
                        "pass a step folder, <checkpoints_path>/<step>/, not an HF folder")


def read_nanotron(checkpoint: Path, progress: bool = False) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(model_config, {transformers name: tensor}) of a tp=1, pp=1 nanotron checkpoint, every file checked."""
    checkpoint = Path(checkpoint)
    _require_checkpoint(checkpoint)
    cfg = _model_config(checkpoint)
    implied_by = (f"model_config.json (hidden_size {cfg['hidden_size']}, intermediate_size {cfg['intermediate_size']}, "
                  f"heads {cfg['num_attention_heads']}/{cfg['num_key_value_heads']}, vocab_size {cfg['vocab_size']})")
    _refuse_parallel_layout(checkpoint)
    params = parameters(cfg)
    model_dir = checkpoint / "model"
    expected = {f"{p.folder}/{p.file}" for p in params}
    for path in sorted(model_dir.rglob("*.safetensors")):
        rel = path.relative_to(model_dir).as_posix()
        if rel not in expected:
            hint = (" (an lm_head while tie_word_embeddings is true)" if rel.startswith("model/lm_head/") else "")
            raise UserError(str(path), f"unknown parameter file {rel}{hint}: a nanotron LLaMA with this model_config has none",
                            "check model_config.json belongs to these weights (layers, tie_word_embeddings); "
                            "checkpoints of other architectures are not converted")
    tensors: dict[str, torch.Tensor] = {}
    with _progress(params, "reading nanotron checkpoint", progress) as bar:
        for param in bar:
            path = model_dir / param.folder / param.file
            if not path.is_file():
                raise UserError(str(path), f"missing shard file for parameter {param.folder}",
                                "copy the whole checkpoint folder (every parameter is its own file under model/)")
            fused = _read_tensor(path, param, implied_by)
            pieces = param.pieces()
            for (name, _), piece in zip(pieces, torch.split(fused, [shape[0] for _, shape in pieces]), strict=True):
                tensors[name] = piece.clone()  # safetensors refuses to save views that share storage
    return cfg, tensors


def _progress(items: list, desc: str, show: bool) -> tqdm:
    """A progress bar to use as a context manager: it ends its line on an error too, so the error reads clean."""
    return tqdm(items, desc=desc, unit=" tensors", disable=not show)


def _hf_config_dict(hf_dir: Path) -> dict[str, Any]:
    path = hf_dir / "config.json"
    raw = _read_json(path)
    if raw is None:
        raise UserError(str(hf_dir), "no config.json", "pass a transformers model folder (config.json + *.safetensors)")
    if raw.get("model_type") != "llama":
        raise UserError(str(path), f"model_type is {raw.get('model_type')!r}, not 'llama' ({raw.get('architectures')})",
                        "only LlamaForCausalLM folders convert to nanotron's LLaMA")
    from transformers import AutoConfig

    hf = AutoConfig.from_pretrained(str(hf_dir))
    rope = dict(getattr(hf, "rope_parameters", None) or {})
    theta = rope.get("rope_theta", getattr(hf, "rope_theta", None))
    heads, hidden = hf.num_attention_heads, hf.hidden_size
    unsupported = {
        "rope_type": (rope.get("rope_type", "default"), "default"),
        "attention_bias": (bool(getattr(hf, "attention_bias", False)), False),
        "mlp_bias": (bool(getattr(hf, "mlp_bias", False)), False),
        "head_dim": (getattr(hf, "head_dim", None) or hidden // heads, hidden // heads),
    }
    for field, (value, wanted) in unsupported.items():
        if value != wanted:
            raise UserError(str(path), f"{field} is {value!r}; nanotron's LLaMA supports only {wanted!r}",
                            "convert a plain LLaMA (no RoPE scaling, no biases, head_dim = hidden_size / heads)")

    def first(token_id):  # nanotron holds one id; a list of eos ids keeps its first
        return token_id[0] if isinstance(token_id, list) else token_id

    cfg = dict(NANOTRON_LLAMA_DEFAULTS)
    cfg.update(
        bos_token_id=first(hf.bos_token_id), eos_token_id=first(hf.eos_token_id), hidden_act=hf.hidden_act,
        hidden_size=hidden, initializer_range=hf.initializer_range, intermediate_size=hf.intermediate_size,
        max_position_embeddings=hf.max_position_embeddings, num_attention_heads=heads, num_hidden_layers=hf.num_hidden_layers,
        num_key_value_heads=hf.num_key_value_heads or heads, pad_token_id=first(hf.pad_token_id),
        rms_norm_eps=hf.rms_norm_eps, rope_theta=float(theta if theta is not None else 10000.0),
        tie_word_embeddings=bool(hf.tie_word_embeddings), use_cache=bool(getattr(hf, "use_cache", True)), vocab_size=hf.vocab_size,
    )
    return cfg


def _hf_weight_files(hf_dir: Path) -> list[Path]:
    files = weight_files(hf_dir)
    if not files:
        raise UserError(str(hf_dir), "no *.safetensors weights", "save the model with save_pretrained (safetensors is its default)")
    return files


def read_hf(hf_dir: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(nanotron model_config, {transformers name: tensor}) of a transformers LLaMA folder, checked."""
    hf_dir = Path(hf_dir)
    cfg = _hf_config_dict(hf_dir)
    params = parameters(cfg)
    wanted = {name: shape for param in params for name, shape in param.pieces()}
    tensors: dict[str, torch.Tensor] = {}
    for path in _hf_weight_files(hf_dir):
        try:
            with safe_open(str(path), framework="pt", device="cpu") as fh:
                for name in fh.keys():
                    if name in wanted:
                        tensors[name] = fh.get_tensor(name)
                    elif name.endswith("rotary_emb.inv_freq") or (name == "lm_head.weight" and cfg["tie_word_embeddings"]):
                        continue  # recomputed buffer / the tied copy of the embedding
                    else:
                        raise UserError(str(path), f"unknown parameter {name}; nanotron's LLaMA has no such tensor",
                                        "convert a plain LlamaForCausalLM (no biases, no extra heads or adapters)")
        except UserError:
            raise
        except Exception as err:
            raise UserError(str(path), f"not a readable safetensors file, truncated or corrupt ({err})",
                            "save the model again with save_pretrained") from None
    for name, shape in wanted.items():
        if name not in tensors:
            raise UserError(str(hf_dir), f"weights have no {name}", "save the complete model with save_pretrained")
        if tuple(tensors[name].shape) != shape:
            raise UserError(str(hf_dir), f"{name} has shape {tuple(tensors[name].shape)}, config.json implies {shape}",
                            "use the config.json saved with these weights")
    return cfg, tensors


# ---------------------------------------------------------------------------------------- writing


def _save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    save_file(tensors, str(path), metadata=metadata)
    os.chmod(path, 0o644)  # safetensors creates its files private; these are ordinary shared outputs


def _check_out(src: Path, out: Path) -> None:
    src, target = Path(src).resolve(), Path(out).resolve()
    if target == src or target in src.parents:
        raise UserError(str(out), f"the output folder would replace the input {src}", "write to a new folder")


def hf_to_nanotron(hf_dir: Path, out: Path, progress: bool = False) -> Path:
    """Write a transformers LLaMA folder as a tp=1, pp=1 nanotron checkpoint folder that nanotron's
    load_weights reads (use it as `model.init_method.path`). Returns `out`."""
    hf_dir, out = Path(hf_dir), Path(out)
    _check_out(hf_dir, out)
    cfg, tensors = read_hf(hf_dir)
    params = parameters(cfg)
    with staged_folder(out) as staging, _progress(params, "writing nanotron checkpoint", progress) as bar:
        for param in bar:
            path = staging / "model" / param.folder / param.file
            path.parent.mkdir(parents=True, exist_ok=True)
            fused = torch.cat([tensors[name] for name, _ in param.pieces()], dim=0).contiguous()
            _save({"data": fused}, path, param.metadata())
        (staging / "model_config.json").write_text(json.dumps(cfg))  # as trainer.py writes it: json.dumps(asdict(config))
        # serialize/metadata.py:save_meta for a model that has not trained yet (TrainingMetadata's checks hold for [])
        meta = {"cp": 1, "custom_metas": None, "dp": 1, "tp": 1, "version": CHECKPOINT_VERSION,
                "metas": {"consumed_tokens_total": 0, "consumed_train_samples": 0, "data_stages": [],
                          "last_stage_idx": None, "last_train_step": 0}}
        (staging / "checkpoint_metadata.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return out


def _load_tokenizer(checkpoint: Path, tokenizer: str | Path | None):
    from transformers import AutoTokenizer

    from smolrecipe.data.tokenizer import from_pretrained_args

    where: Path | str = "--tokenizer"
    if tokenizer is None:
        where = checkpoint / "config.yaml"
        tokenizer = ((_read_yaml(where) or {}).get("tokenizer") or {}).get("tokenizer_name_or_path")
        if not tokenizer:
            raise UserError(str(checkpoint), "no tokenizer given and config.yaml names none (tokenizer.tokenizer_name_or_path)",
                            "pass --tokenizer DIR (the recipe's tokenizer folder, e.g. runs/data/tokenizers/<name>)")
        if "$" in str(tokenizer):
            from smolrecipe.recipe.envpaths import expand

            try:
                tokenizer = expand(str(tokenizer), "tokenizer.tokenizer_name_or_path")
            except UserError as err:
                raise UserError(str(where), err.problem, f"{err.fix}, or pass --tokenizer DIR") from None
    name, kwargs = from_pretrained_args(str(tokenizer))
    try:
        return AutoTokenizer.from_pretrained(name, **kwargs)
    except Exception as err:
        raise UserError(str(where), f"cannot load tokenizer {tokenizer} ({type(err).__name__}: {str(err).splitlines()[0]})",
                        "pass --tokenizer DIR with the tokenizer folder the run was trained with") from None


def _model_card(checkpoint: Path, cfg: dict[str, Any], n_params: int, dtype: torch.dtype) -> str:
    prov = checkpoint_provenance(checkpoint)

    def show(value, fmt="{}"):
        return "unknown" if value is None else fmt.format(value)

    title = "-".join(x for x in (prov["recipe"], prov["stage"]) if x) or "smolrecipe model"
    title += f" (step {prov['step']})" if prov["step"] is not None else ""
    return (
        "---\nlibrary_name: transformers\npipeline_tag: text-generation\ntags: [smolrecipe, nanotron, llama]\n---\n\n"
        f"# {title}\n\n"
        "A LLaMA-style model trained with smolrecipe on nanotron.\n\n"
        "| | |\n|---|---|\n"
        f"| recipe | {show(prov['recipe'])} |\n| stage | {show(prov['stage'])} |\n| step | {show(prov['step'])} |\n"
        f"| tokens seen | {show(prov['tokens_seen'], '{:,}')} (by this stage's run) |\n"
        f"| parameters | {n_params:,} ({str(dtype).removeprefix('torch.')}) |\n"
        f"| architecture | {cfg['num_hidden_layers']} layers, hidden {cfg['hidden_size']}, {cfg['num_attention_heads']}/"
        f"{cfg['num_key_value_heads']} GQA heads, SwiGLU {cfg['intermediate_size']}, RoPE theta {cfg['rope_theta']:g}, "
        f"vocab {cfg['vocab_size']}, {'tied' if cfg['tie_word_embeddings'] else 'untied'} embeddings |\n\n"
        f"Converted from nanotron checkpoint {checkpoint.resolve()} with `python tools/convert.py nanotron-to-hf`.\n"
    )


def nanotron_to_hf(checkpoint: Path, out: Path, tokenizer: str | Path | None = None, dtype: str | None = None,
                   progress: bool = False) -> Path:
    """Write a tp=1, pp=1 nanotron checkpoint step folder as a transformers LlamaForCausalLM folder with
    its tokenizer (chat template included), generation config and model card. `tokenizer` defaults
    to the checkpoint config.yaml's tokenizer; `dtype` (float32|bfloat16|float16) to the stored one."""
    from transformers import GenerationConfig, LlamaConfig

    checkpoint, out = resolve_checkpoint(checkpoint), Path(out)
    _check_out(checkpoint, out)
    if dtype is not None and dtype not in DTYPES:
        raise UserError("--dtype", f"unknown dtype {dtype!r}", f"use one of {', '.join(DTYPES)}")
    _require_checkpoint(checkpoint)
    tok = _load_tokenizer(checkpoint, tokenizer)  # before the weights: a missing tokenizer is the cheapest thing to find
    cfg, tensors = read_nanotron(checkpoint, progress=progress)
    if len(tok) > cfg["vocab_size"]:
        raise UserError(str(checkpoint / "model_config.json"), f"the tokenizer has {len(tok)} tokens, the model only {cfg['vocab_size']}",
                        "pass --tokenizer with the tokenizer the run was trained with")
    if tok.eos_token_id is None:
        raise UserError("--tokenizer", "the tokenizer has no eos token (the end-of-turn token generation stops at)",
                        "use the recipe's tokenizer folder, which sets it")
    torch_dtype = DTYPES[dtype] if dtype else tensors["model.embed_tokens.weight"].dtype
    tensors = {name: t.to(torch_dtype) for name, t in tensors.items()}
    hf_config = LlamaConfig(
        vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"], intermediate_size=cfg["intermediate_size"],
        num_hidden_layers=cfg["num_hidden_layers"], num_attention_heads=cfg["num_attention_heads"],
        num_key_value_heads=cfg["num_key_value_heads"], hidden_act=cfg["hidden_act"],
        max_position_embeddings=cfg["max_position_embeddings"], initializer_range=cfg["initializer_range"],
        rms_norm_eps=cfg["rms_norm_eps"], rope_theta=float(cfg["rope_theta"]), tie_word_embeddings=cfg["tie_word_embeddings"],
        bos_token_id=cfg["bos_token_id"], eos_token_id=cfg["eos_token_id"], pad_token_id=cfg["pad_token_id"],
        attention_bias=False, mlp_bias=False, use_cache=cfg["use_cache"], architectures=["LlamaForCausalLM"],
        dtype=str(torch_dtype).removeprefix("torch."),
    )
    generation = GenerationConfig(bos_token_id=tok.bos_token_id if tok.bos_token_id is not None else cfg["bos_token_id"],
                                  eos_token_id=tok.eos_token_id,
                                  pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    n_params = sum(t.numel() for t in tensors.values())
    with staged_folder(out) as staging:
        _save(tensors, staging / "model.safetensors", {"format": "pt"})
        hf_config.save_pretrained(str(staging))
        generation.save_pretrained(str(staging))
        tok.save_pretrained(str(staging))
        (staging / "README.md").write_text(_model_card(checkpoint, cfg, n_params, torch_dtype))
    return out


def weights_summary(folder: Path) -> dict[str, Any]:
    """Tensors, parameters and dtypes stored under `folder` (either layout), from safetensors headers only."""
    tensors = params = 0
    dtypes: set[str] = set()
    for path in sorted(Path(folder).rglob("*.safetensors")):
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            for name in fh.keys():
                piece = fh.get_slice(name)
                tensors += 1
                params += math.prod(piece.get_shape())
                dtypes.add(piece.get_dtype())
    return {"tensors": tensors, "parameters": params, "dtypes": sorted(dtypes)}
