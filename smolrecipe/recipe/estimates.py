"""Parameter count, per-GPU memory and the cost of the whole run (FLOPs, GPU-hours, wall-clock,
checkpoint disk) of a recipe, before a GPU hour is spent.

Memory model for nanotron with bf16 weights, `accumulate_grad_in_fp32` and ZeRO-0 (every rank
holds everything), per rank:
  weights      bf16 copy used by forward/backward (2 B/param) + fp32 master copy (4 B/param)
  fp32 grads   the fp32 gradient accumulation buffer (4 B/param)
  AdamW states exp_avg and exp_avg_sq in fp32 (8 B/param)
  activations  bf16 tensors saved for backward, per token and layer (flash attention keeps no
               s x s matrix): layer input and its RMSNorm output, q, k, v, rotated q and k, attention
               output, the residual and its RMSNorm output, gate, up, SiLU(gate) and their product:
               7h + 3 kv + 4 i values per token. With layer recompute only each layer's input is
               kept, plus one layer's full set while it is recomputed.
  logits       the vocabulary projection for every token: bf16 logits (2 B) + their fp32 copy for
               the loss (4 B) + fp32 softmax/gradient (4 B) = 10 B per token per vocabulary entry.
               At 128,256 entries this dominates large micro-batches.
  overhead     CUDA context, NCCL buffers and allocator fragmentation: a fixed allowance (on CPU,
               the Python and PyTorch runtime).
ZeRO-1 divides the optimizer states and fp32 master weights by DP.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional

from smolrecipe.recipe.plan import RunPlan
from smolrecipe.recipe.schema import Recipe

GB = 1e9
OVERHEAD_BYTES = 2.0 * GB
CPU_OVERHEAD_BYTES = 0.5 * GB
LOGIT_BYTES_PER_ENTRY = 2 + 4 + 4


@dataclass(frozen=True)
class ParamCount:
    embedding: int
    per_layer: int
    layers: int
    final_norm: int
    lm_head: int  # 0 when tied to the embedding

    @property
    def non_embedding(self) -> int:
        return self.per_layer * self.layers + self.final_norm

    @property
    def total(self) -> int:
        return self.embedding + self.non_embedding + self.lm_head


def count_params(recipe: Recipe) -> ParamCount:
    m = recipe.model
    h, kv, i = m.hidden_size, m.kv_size, m.intermediate_size
    attention = h * h + 2 * h * kv + h * h  # q, k, v, o (no biases)
    mlp = 3 * h * i  # gate, up, down
    norms = 2 * h
    return ParamCount(
        embedding=m.vocab_size * h,
        per_layer=attention + mlp + norms,
        layers=m.num_layers,
        final_norm=h,
        lm_head=0 if m.tie_word_embeddings else m.vocab_size * h,
    )


@dataclass(frozen=True)
class MemoryEstimate:
    micro_batch_size: int
    recompute: bool
    weights: float
    grads: float
    optimizer: float
    activations: float
    logits: float
    overhead: float

    @property
    def total(self) -> float:
        return self.weights + self.grads + self.optimizer + self.activations + self.logits + self.overhead


def estimate_memory(recipe: Recipe, micro_batch_size: int | None = None, recompute: bool | None = None,
                    sequence_length: int | None = None) -> MemoryEstimate:
    """Bytes per rank for a micro-batch (default: the recipe's) of windows of `sequence_length`
    (default: training.sequence_length) with or without layer recompute. Activations grow linearly
    with the window: flash-attention (and SDPA's memory-efficient kernel) never hold the
    sequence x sequence score matrix."""
    m, t = recipe.model, recipe.training
    mbs = t.micro_batch_size if micro_batch_size is None else micro_batch_size
    recompute = t.recompute_layer if recompute is None else recompute
    params = count_params(recipe).total
    dp = recipe.parallelism.dp
    zero = recipe.training.optimizer.zero_stage
    fp32_master = 4 * params / (dp if zero >= 1 else 1)
    low_precision = 2 * params if m.dtype == "bfloat16" else 0
    adam = 8 * params / (dp if zero >= 1 else 1)
    grads = 4 * params

    act_bytes = 2 if m.dtype == "bfloat16" else 4
    tokens = mbs * (sequence_length or t.sequence_length)
    h, kv, i, layers = m.hidden_size, m.kv_size, m.intermediate_size, m.num_layers
    per_layer = tokens * (7 * h + 3 * kv + 4 * i) * act_bytes
    layer_input = tokens * h * act_bytes
    activations = (layers * layer_input + per_layer) if recompute else layers * per_layer
    activations += 2 * tokens * h * act_bytes  # final RMSNorm input and output
    logits = tokens * m.vocab_size * LOGIT_BYTES_PER_ENTRY
    overhead = OVERHEAD_BYTES if recipe.cluster.gpus_per_node else CPU_OVERHEAD_BYTES
    return MemoryEstimate(mbs, recompute, low_precision + fp32_master, grads, adam, activations, logits, overhead)


def fits(recipe: Recipe, estimate: MemoryEstimate) -> bool:
    return estimate.total <= recipe.cluster.gpu_memory_gb * GB


# ---------------------------------------------------------------------------------------------
# The cost of the whole run: FLOPs, GPU-hours and wall-clock per stage, disk for data and checkpoints.
#
# FLOPs per trained token, PaLM's MFU convention (Chowdhery et al. 2022, appendix B), the same formula
# bench/train_throughput.py uses to report a measured MFU:
#   6 x N   N = the parameters that do a matrix multiply per token: every layer's q, k, v, o, gate,
#           up and down projections, and the vocabulary projection (lm_head, which is the embedding
#           matrix again when tied: it is a matmul either way). The embedding lookup (a gather) and
#           the RMSNorm scales are left out. 2N forward + 4N backward.
#   + 12 x layers x seq_len x hidden   attention's own matmuls, QK^T and AV, 2 x seq_len x hidden
#           FLOPs each forward per layer and token, x3 for forward + backward; no causal halving
#           (flash attention skips the masked half, but the MFU we assume is measured with the
#           unhalved count, so the two stay consistent). Kaplan et al. 2020 count QK^T only (6 L s h).
# Layer recompute repeats the forward pass (hardware FLOPs, not model FLOPs): it is part of why MFU
# is well below 1, and is not added here.

# Model-FLOPs utilisation assumed for GPU-hours: 0.30. Hugging Face's SmolLM3 (3B) run on nanotron
# plateaued at 29.4% MFU on H100s (reported by Tzafon, "Breaking 40k tokens/sec", tzafon.ai/blog/
# breaking-40k-tokens); large, tuned runs reach 38-43% (Llama 3). A 0.5B model at sequence length 1024
# with layer recompute and a 128k vocabulary keeps the GPU less busy than either, so the lower figure.
# Measure the real one with `python bench/train_throughput.py --shape 492m` on the cluster.
ASSUMED_MFU = 0.30

# Dense (no 2:4 sparsity) bf16 tensor-core peak per GPU, TFLOP/s, from NVIDIA's data sheets (A10G:
# AWS's data sheet). Keys are normalised names (see gpu_key): upper case, no "NVIDIA", no memory size.
GPU_PEAK_BF16_TFLOPS = {
    "A100": 312.0, "A100 SXM": 312.0, "A100 SXM4": 312.0, "A100 PCIE": 312.0,
    "H100": 989.0, "H100 SXM": 989.0, "H100 SXM5": 989.0, "H100 PCIE": 756.0,
    "H200": 989.0, "H200 SXM": 989.0,
    "L40S": 362.0, "L4": 121.0, "A10": 125.0, "A10G": 70.0,
}

# Bytes per token in a datatrove .ds file: DocumentTokenizer's token_size is 4 when the tokenizer's
# vocabulary is larger than 65,536 (uint16 max + 1), else 2 (datatrove/utils/tokenization.py). Each
# file's .index adds 8 bytes (a uint64 end offset) per document (datatrove/pipeline/tokens/tokenizer.py).
INDEX_BYTES_PER_DOCUMENT = 8


def gpu_key(name: str) -> str:
    """'NVIDIA A100-SXM4-80GB' -> 'A100 SXM4'."""
    words = name.upper().replace("-", " ").replace("_", " ").split()
    return " ".join(w for w in words if w != "NVIDIA" and not re.fullmatch(r"\d+GB", w))


def peak_tflops(recipe: Recipe) -> Optional[float]:
    """The recipe's GPU's dense bf16 peak; None for a CPU recipe or a GPU not in the table."""
    c = recipe.cluster
    return GPU_PEAK_BF16_TFLOPS.get(gpu_key(c.gpu_name)) if c.gpus_per_node else None


def matmul_params(recipe: Recipe) -> int:
    """N of 6N: the weights multiplied per token (every layer's projections and the lm_head)."""
    m = recipe.model
    h, kv, i = m.hidden_size, m.kv_size, m.intermediate_size
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * i
    return per_layer * m.num_layers + m.vocab_size * h


@dataclass(frozen=True)
class FlopsPerToken:
    dense: int  # 6N
    attention: int  # 12 x layers x seq_len x hidden

    @property
    def total(self) -> int:
        return self.dense + self.attention


def flops_per_token(recipe: Recipe, sequence_length: int | None = None) -> FlopsPerToken:
    """At windows of `sequence_length` (default: training.sequence_length): attention's share grows with it."""
    m, window = recipe.model, sequence_length or recipe.training.sequence_length
    return FlopsPerToken(6 * matmul_params(recipe), 12 * m.num_layers * window * m.hidden_size)


UINT16_IDS = 65_536  # datatrove stores 2-byte tokens up to this vocabulary size, 4-byte ones above


def token_size_for(vocab_size: int) -> int:
    """Bytes per token in a .ds file for a vocabulary of this size (datatrove's rule)."""
    return 4 if vocab_size > UINT16_IDS else 2


def token_bytes(recipe: Recipe) -> int:
    return token_size_for(recipe.model.vocab_size)


def checkpoint_bytes(recipe: Recipe) -> tuple[int, int]:
    """(weights, optimizer) bytes of one nanotron checkpoint folder, all ranks together.

    Read from nanotron's save code (serialize/main.py save, weights.py save_weights, optimizer.py
    save_optimizer, at the pinned commit): model/ holds every parameter once in the model's dtype
    (only DP rank 0 writes, a tied embedding only once); optimizer/ is one torch.save of the optimizer's
    state_dict, written by DP rank 0 under ZeRO-0 and one shard per DP rank under ZeRO-1 (the same total).
    With accumulate_grad_in_fp32 it is OptimizerFromGradientAccumulator: torch AdamW's exp_avg and
    exp_avg_sq of the fp32 master copy (4 + 4 B/param) plus the accumulator's state_dict, which is
    that fp32 master copy (4 B/param); the fp32 gradient buffers are not saved. Without it, AdamW's two
    states have the model's dtype. lr_scheduler/, random states and config are a few kB.
    """
    params = count_params(recipe).total
    dtype = 2 if recipe.model.dtype == "bfloat16" else 4
    optimizer = (4 + 4 + 4) if recipe.training.optimizer.accumulate_grad_in_fp32 else 2 * dtype
    return params * dtype, params * optimizer


def checkpoints_saved(train_steps: int, interval: int) -> int:
    """Step folders one stage leaves: nanotron's trainer saves at every multiple of checkpoint_interval
    and, with save_final_state (our configs set it), at the last step, into the same step folder when
    the last step is a multiple. It deletes none (only its S3 upload can, and our configs have none).
    A job stopped before its time limit adds one more."""
    return math.ceil(train_steps / interval)


@dataclass(frozen=True)
class StageCost:
    name: str
    tokens: int
    flops: float
    gpu_hours: Optional[float]  # None: no GPU peak known (a CPU recipe or an unlisted GPU)
    wall_hours: Optional[float]  # on the recipe's nodes, all GPUs in data parallel
    checkpoints: int


@dataclass(frozen=True)
class RunCost:
    stages: tuple[StageCost, ...]
    per_token: FlopsPerToken
    peak_tflops: Optional[float]
    mfu: float
    gpus: int
    checkpoint_weights: int  # bytes of one checkpoint's model/
    checkpoint_optimizer: int  # bytes of one checkpoint's optimizer/

    @property
    def flops(self) -> float:
        return sum(s.flops for s in self.stages)

    @property
    def gpu_hours(self) -> Optional[float]:
        return None if self.peak_tflops is None else sum(s.gpu_hours or 0.0 for s in self.stages)

    @property
    def wall_hours(self) -> Optional[float]:
        return None if self.peak_tflops is None else sum(s.wall_hours or 0.0 for s in self.stages)

    @property
    def checkpoint_size(self) -> int:
        return self.checkpoint_weights + self.checkpoint_optimizer

    @property
    def checkpoints(self) -> int:
        return sum(s.checkpoints for s in self.stages)


def run_cost(plan: RunPlan, mfu: float = ASSUMED_MFU) -> RunCost:
    """FLOPs, GPU-hours and wall-clock per stage (the tokens it trains on: whole steps), and checkpoints."""
    recipe = plan.recipe
    per_token = flops_per_token(recipe)
    peak = peak_tflops(recipe)
    gpus = recipe.cluster.gpus_per_node * recipe.cluster.nodes
    stages = []
    for s in plan.stages:
        flops = float(s.tokens) * flops_per_token(recipe, s.sequence_length).total * recipe.stage(s.name).compute_per_token()
        gpu_hours = None if peak is None else flops / (peak * 1e12 * mfu) / 3600
        stages.append(StageCost(s.name, s.tokens, flops, gpu_hours, None if gpu_hours is None else gpu_hours / gpus,
                                checkpoints_saved(s.train_steps, recipe.training.checkpoint_interval)))
    weights, optimizer = checkpoint_bytes(recipe)
    return RunCost(tuple(stages), per_token, peak, mfu, gpus, weights, optimizer)
