"""Parameter count and per-GPU memory of a recipe, before a GPU hour is spent.

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

from dataclasses import dataclass

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


def estimate_memory(recipe: Recipe, micro_batch_size: int | None = None, recompute: bool | None = None) -> MemoryEstimate:
    """Bytes per rank for a micro-batch (default: the recipe's) with or without layer recompute."""
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
    tokens = mbs * t.sequence_length
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
