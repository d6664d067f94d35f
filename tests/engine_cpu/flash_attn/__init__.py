"""Test stand-in for the `flash_attn` package (flash-attention 2), for machines without it.

NOT flash-attn. It lives under tests/ and is importable only when tests/engine_cpu is put on the path
(PYTHONPATH or sys.path). It gives every name nanotron imports from flash_attn, and exact plain-torch
versions (any dtype, autograd by torch) of the three kernels on the training path of nanotron's
LlamaForTraining: `flash_attn_interface.flash_attn_varlen_func`, `layers.rotary.RotaryEmbedding` and
`ops.triton.layer_norm.layer_norm_fn` (with the packed and padded attention forms, which Qwen2ForTraining
uses, built on the first). Names used only at inference or by ring attention raise
NotImplementedError when called.
"""

# A local version label, so that logs never pass this off as a real flash-attn release; >= 2.1 so
# that nanotron.nn.attention takes its flash-attn >= 2.1 code path (it compares this version).
__version__ = "2.7.4+test.standin"

from .flash_attn_interface import (  # noqa: E402,F401  (re-exported, as flash-attn does)
    flash_attn_func,
    flash_attn_kvpacked_func,
    flash_attn_qkvpacked_func,
    flash_attn_varlen_func,
    flash_attn_varlen_kvpacked_func,
    flash_attn_varlen_qkvpacked_func,
    flash_attn_with_kvcache,
)
