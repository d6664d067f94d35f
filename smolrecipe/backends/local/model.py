"""The recipe's model as a transformers LlamaForCausalLM, initialised the way nanotron initialises it.

The architecture knobs map one to one onto the nanotron config the renderer writes (GQA, tied
embeddings, RoPE theta, RMSNorm eps, SwiGLU width). nanotron's StandardParametrizator with the
rendered `scaling_method: NUM_LAYERS` draws every linear and embedding weight from N(0, std),
except the projections back into the residual stream (attention o_proj, MLP down_proj), whose
std is divided by sqrt(2 x layers); norm weights start at 1.
"""

from __future__ import annotations

import math

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from smolrecipe.errors import UserError
from smolrecipe.recipe.plan import StagePlan
from smolrecipe.recipe.schema import Recipe

RESIDUAL_OUTPUTS = ("self_attn.o_proj", "mlp.down_proj")


def llama_config(recipe: Recipe, stage: StagePlan | None = None) -> LlamaConfig:
    """The transformers config of the recipe's model, at `stage`'s context (RoPE base, longest
    window) when given, else at the first stage's."""
    m = recipe.model
    theta, positions = (stage.rope_theta, stage.max_position) if stage else (m.rope_theta, recipe.training.sequence_length)
    if m.rope_interleaved:
        raise UserError("model.rope_interleaved", "transformers' LLaMA rotates half-dimensions (LLaMA-3 style); "
                          "the local backend cannot train interleaved RoPE", "set `rope_interleaved: false`")
    return LlamaConfig(
        vocab_size=m.vocab_size,
        hidden_size=m.hidden_size,
        intermediate_size=m.intermediate_size,
        num_hidden_layers=m.num_layers,
        num_attention_heads=m.num_attention_heads,
        num_key_value_heads=m.num_key_value_heads,
        hidden_act=m.hidden_act,
        max_position_embeddings=positions,
        rms_norm_eps=m.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": theta},
        tie_word_embeddings=m.tie_word_embeddings,
        initializer_range=m.init_std,
        bos_token_id=recipe.tokenizer.bos_token_id,
        eos_token_id=recipe.tokenizer.eos_token_id,
        attention_bias=False,
        mlp_bias=False,
        use_cache=False,  # training: no KV cache
        attn_implementation=attention_implementation(m.attn_implementation),
    )


def attention_implementation(wanted: str) -> str:
    """The recipe's attention kernel where this machine has it; SDPA otherwise (flash-attn needs CUDA).
    Training feeds packed windows without position ids: causal attention over the whole window, as
    nanotron's LLaMA class computes it (smolrecipe.data.batches)."""
    if wanted == "flash_attention_2":
        import importlib.util

        if not (torch.cuda.is_available() and importlib.util.find_spec("flash_attn")):
            return "sdpa"
    return wanted


@torch.no_grad()
def init_like_nanotron(model: LlamaForCausalLM, std: float, num_layers: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    residual_std = std / math.sqrt(2 * num_layers)
    for name, param in model.named_parameters():  # tied lm_head shares the embedding: listed once
        if name.endswith("norm.weight"):
            param.fill_(1.0)
        elif any(part in name for part in RESIDUAL_OUTPUTS):
            param.copy_(torch.randn(param.shape, generator=generator) * residual_std)
        else:
            param.copy_(torch.randn(param.shape, generator=generator) * std)


def build_model(recipe: Recipe, seed: int | None = None) -> LlamaForCausalLM:
    config = llama_config(recipe)
    model = LlamaForCausalLM(config)
    init_like_nanotron(model, recipe.model.init_std, recipe.model.num_layers,
                       recipe.training.seed if seed is None else seed)
    return model
