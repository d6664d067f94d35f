"""Context extension: pretraining continued at longer windows with a larger RoPE base.

It reads the recipe's sources like any pretraining stage; what differs is in the recipe's plan: the
stage's `sequence_length` sets its windows (both backends read the nanoset folders in windows of
that length) and its `rope_theta` the model's RoPE base, written into its nanotron config
(`model_config.rope_theta`, `max_position_embeddings`) and into the transformers config its
parent's weights are loaded with (smolrecipe.backends.local.train.load_parent). RoPE has no
weights, so the parent's checkpoint loads unchanged under the new base.

nanotron's LLaMA class at the pinned commit applies plain RoPE with the config's theta: its
`rope_scaling` field is declared but never read. Linear position interpolation is in its Qwen2 class
(`rope_seq_len_interpolation_factor`); YaRN and Llama-3 frequency scaling only in transformers.
Raising the base (ABF, as SmolLM2 and Llama 3 did) is what both backends train alike.
"""

from __future__ import annotations

from smolrecipe.kinds.pretrain import Pretrain


class LongContext(Pretrain):
    name = "long_context"


KIND = LongContext()
