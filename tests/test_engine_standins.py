"""The test stand-ins under tests/engine_cpu, each against an independent reference.

tests/engine_cpu holds a stand-in `flash_attn` (exact torch kernels), a stand-in `grouped_gemm`
(import only) and cpu_placement (nanotron's CUDA-only code on a CPU, gloo process group). They let
nanotron's own model and trainer run where flash-attn and CUDA are missing; these tests hold them
to references that share none of their code: explicit per-sequence, per-head attention in float64,
transformers' LLaMA rotary and RMSNorm, complex-number RoPE, torch's norms; and nanotron's
LlamaForTraining, built on the CPU through the shim, against transformers' LlamaForCausalLM.

The folder is appended to sys.path (not prepended), so a real flash_attn, where installed, is
imported instead and the stand-in never is; the stand-in's tests are then skipped. Without
nanotron these tests skip with the reason, except under CI, where they fail.
"""

import math
import os
import sys
from pathlib import Path

import pytest
from conftest import ENGINE_SHIMS, ENGINE_SITE

ENGINE_CPU = ENGINE_SHIMS
ADDED = [str(p) for p in (ENGINE_CPU, ENGINE_SITE) if str(p) not in sys.path]
sys.path.extend(ADDED)

try:
    import flash_attn
    import nanotron  # noqa: F401
    import torch
except Exception as exc:  # what is missing, as pytest shows it
    reason = f"nanotron is not importable here ({exc!r}); the stand-ins exist only to run it"
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason, allow_module_level=True)

import torch.nn.functional as F  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _engine_off_the_path_afterwards():
    """The rest of the suite runs without nanotron in this process: lighteval imports nanotron's
    config whenever it can find nanotron (which needs flash-attn), so take both away again."""
    yield
    from cpu_placement import uninstall

    uninstall()
    for path in ADDED:
        sys.path.remove(path)
    for name in [m for m in sys.modules if m.split(".")[0] in ("nanotron", "flash_attn", "grouped_gemm", "cpu_placement")]:
        del sys.modules[name]

STANDIN = Path(flash_attn.__file__).resolve().is_relative_to(ENGINE_CPU)
standin_only = pytest.mark.skipif(not STANDIN, reason=f"the real flash_attn is installed ({flash_attn.__file__})")
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

if STANDIN:
    from flash_attn.flash_attn_interface import (
        flash_attn_func,
        flash_attn_varlen_func,
        flash_attn_varlen_kvpacked_func,
    )
    from flash_attn.layers.rotary import RotaryEmbedding, apply_rotary_emb
    from flash_attn.ops.triton.layer_norm import layer_norm_fn


def _cu(lengths, device):
    return torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=device)


# ---------------------------------------------------------------- attention


def reference_attention(q, k, v, lens_q, lens_k, causal, window=(-1, -1), scale=None):
    """Sequence by sequence and head by head, in float64: softmax(q k^T * scale + mask) v with the
    softmax written out. Query i of a sequence sits at key position i + len_k - len_q (flash-attn's
    bottom-right alignment); a query with no visible key outputs zeros."""
    q, k, v = q.double(), k.double(), v.double()
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    group = q.shape[1] // k.shape[1]  # query heads per kv head
    out = torch.zeros(q.shape[0], q.shape[1], v.shape[-1], dtype=torch.float64, device=q.device)
    q0 = k0 = 0
    for len_q, len_k in zip(lens_q, lens_k, strict=True):
        pos = torch.arange(len_q, device=q.device)[:, None] + (len_k - len_q)
        key = torch.arange(len_k, device=q.device)[None, :]
        visible = torch.ones(len_q, len_k, dtype=torch.bool, device=q.device)
        if causal or window[1] >= 0:
            visible &= key <= pos + (0 if causal else window[1])
        if window[0] >= 0:
            visible &= key >= pos - window[0]
        for h in range(q.shape[1]):
            kh = h // group
            scores = q[q0:q0 + len_q, h] @ k[k0:k0 + len_k, kh].T * scale
            top = scores.masked_fill(~visible, -math.inf).max(dim=-1, keepdim=True).values
            top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
            weights = torch.where(visible, torch.exp(scores - top), torch.zeros_like(scores))
            total = weights.sum(dim=-1, keepdim=True)
            weights = weights / torch.where(total > 0, total, torch.ones_like(total))
            out[q0:q0 + len_q, h] = weights @ v[k0:k0 + len_k, kh]
        q0, k0 = q0 + len_q, k0 + len_k
    return out


@standin_only
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("heads_k", [4, 2, 1])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize(
    "lens_q,lens_k",
    [([5, 1, 9, 3], [5, 1, 9, 3]), ([2, 5, 4], [6, 5, 2])],  # ragged; then q != k lengths, incl. q > k
)
def test_varlen_attention_matches_reference(device, heads_k, causal, lens_q, lens_k):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(sum(lens_q), 4, 8, dtype=torch.float64, generator=g).to(device).requires_grad_()
    k = torch.randn(sum(lens_k), heads_k, 8, dtype=torch.float64, generator=g).to(device).requires_grad_()
    v = torch.randn(sum(lens_k), heads_k, 8, dtype=torch.float64, generator=g).to(device).requires_grad_()
    out = flash_attn_varlen_func(q, k, v, _cu(lens_q, device), _cu(lens_k, device), max(lens_q), max(lens_k),
                                 causal=causal)
    ref = reference_attention(q, k, v, lens_q, lens_k, causal)
    assert out.shape == (sum(lens_q), 4, 8) and out.dtype == torch.float64
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    grad = torch.randn(out.shape, dtype=torch.float64, generator=g).to(device)
    got = torch.autograd.grad(out, (q, k, v), grad)
    want = torch.autograd.grad(ref, (q, k, v), grad)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)


@standin_only
@pytest.mark.parametrize("device", DEVICES)
def test_varlen_attention_window_scale_dtype_and_uncovered_rows(device):
    g = torch.Generator().manual_seed(1)
    lens = [6, 4]
    q = torch.randn(sum(lens) + 3, 4, 8, generator=g).to(device)  # 3 packed rows no sequence covers
    k, v = (torch.randn(sum(lens), 2, 8, generator=g).to(device) for _ in range(2))
    out = flash_attn_varlen_func(q, k, v, _cu(lens, device), _cu(lens, device), 6, 6, softmax_scale=0.3,
                                 causal=True, window_size=(2, 0))
    ref = reference_attention(q[:sum(lens)], k, v, lens, lens, True, window=(2, 0), scale=0.3)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out[:sum(lens)].double(), ref, rtol=1e-5, atol=1e-6)
    assert out[sum(lens):].abs().max() == 0
    # bf16 in, bf16 out, computed in fp32 (as flash-attn accumulates)
    out16 = flash_attn_varlen_func(q.bfloat16(), k.bfloat16(), v.bfloat16(), _cu(lens, device), _cu(lens, device),
                                   6, 6, causal=True)
    ref16 = reference_attention(q[:sum(lens)].bfloat16(), k.bfloat16(), v.bfloat16(), lens, lens, True)
    assert out16.dtype == torch.bfloat16
    torch.testing.assert_close(out16[:sum(lens)].double(), ref16, rtol=2e-2, atol=2e-2)


@standin_only
def test_padded_and_kvpacked_forms_agree_with_varlen():
    g = torch.Generator().manual_seed(2)
    q = torch.randn(3, 5, 4, 8, dtype=torch.float64, generator=g)
    kv = torch.randn(3, 5, 2, 2, 8, dtype=torch.float64, generator=g)
    batch_out = flash_attn_func(q, kv[:, :, 0], kv[:, :, 1], causal=True)
    cu = _cu([5, 5, 5], "cpu")
    packed_out = flash_attn_varlen_kvpacked_func(q.reshape(15, 4, 8), kv.reshape(15, 2, 2, 8), cu, cu, 5, 5, 0.0,
                                                 causal=True)
    ref = reference_attention(q.reshape(15, 4, 8), kv[:, :, 0].reshape(15, 2, 8), kv[:, :, 1].reshape(15, 2, 8),
                              [5, 5, 5], [5, 5, 5], True)
    torch.testing.assert_close(batch_out.reshape(15, 4, 8), ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(packed_out, ref, rtol=1e-12, atol=1e-12)
    # return_attn_probs (nanotron's Qwen2 logs the second value): flash-attn's (out, softmax_lse, None)
    out, lse, probs = flash_attn_varlen_kvpacked_func(q.reshape(15, 4, 8), kv.reshape(15, 2, 2, 8), cu, cu, 5, 5,
                                                      causal=True, return_attn_probs=True)
    keys = kv[:, :, 0].repeat_interleave(2, dim=2)  # [batch, seqlen, 4, d]: query head h reads kv head h // 2
    scores = torch.einsum("bqhd,bkhd->bhqk", q, keys) / math.sqrt(8)
    scores = scores.masked_fill(torch.ones(5, 5, dtype=torch.bool).triu(1), -math.inf)
    torch.testing.assert_close(lse, scores.logsumexp(-1).permute(1, 0, 2).reshape(4, 15), rtol=1e-12, atol=1e-12)
    assert probs is None and torch.equal(out, packed_out)


# ---------------------------------------------------------------- rotary


def _transformers_rope(positions, dim, base, dtype):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    config = LlamaConfig(hidden_size=dim * 4, num_attention_heads=4, rope_theta=base, max_position_embeddings=64)
    assert config.rope_parameters["rope_theta"] == base
    probe = torch.empty(0, dtype=dtype, device=positions.device)
    return LlamaRotaryEmbedding(config).to(positions.device)(probe, positions)


@standin_only
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("offset", [0, 3])
def test_rotary_module_matches_transformers(device, dtype, offset):
    """The call nanotron makes (q and packed kv, GPT-NeoX halves) against transformers' LLaMA RoPE
    (also fp32 cos/sin tables, applied in the input dtype), values and gradients."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    g = torch.Generator().manual_seed(3)
    batch, seqlen, dim, base = 2, 7, 16, 500000.0
    q = torch.randn(batch, seqlen, 4, dim, dtype=dtype, generator=g).to(device).requires_grad_()
    kv = torch.randn(batch, seqlen, 2, 2, dim, dtype=dtype, generator=g).to(device).requires_grad_()
    rotary = RotaryEmbedding(dim=dim, base=base, interleaved=False)
    q_out, kv_out = rotary(q, kv=kv, seqlen_offset=offset)

    positions = (torch.arange(seqlen, device=device) + offset).expand(batch, seqlen)
    cos, sin = _transformers_rope(positions, dim, base, dtype)
    q_ref, k_ref = apply_rotary_pos_emb(q, kv[:, :, 0], cos, sin, unsqueeze_dim=2)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(q_out, q_ref, **tol)
    torch.testing.assert_close(kv_out[:, :, 0], k_ref, **tol)
    assert torch.equal(kv_out[:, :, 1], kv[:, :, 1])
    gq = torch.randn(q_out.shape, dtype=dtype, generator=g).to(device)
    gk = torch.randn(k_ref.shape, dtype=dtype, generator=g).to(device)
    got = torch.autograd.grad((q_out * gq).sum() + (kv_out[:, :, 0] * gk).sum(), (q, kv))
    want = torch.autograd.grad((q_ref * gq).sum() + (k_ref * gk).sum(), (q, kv))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, **tol)


def _complex_rope(x, angles):
    """GPT-J (interleaved) RoPE as complex multiplication: pairs (x[2i], x[2i+1]) times e^(i angle)."""
    pairs = torch.view_as_complex(x.double().reshape(*x.shape[:-1], -1, 2).contiguous())
    return torch.view_as_real(pairs * torch.polar(torch.ones_like(angles), angles)[None, :, None]).flatten(-2)


@standin_only
def test_rotary_interleaved_matches_complex_form():
    g = torch.Generator().manual_seed(4)
    batch, seqlen, dim = 2, 9, 16
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    angles = torch.outer(torch.arange(seqlen, dtype=torch.float64), inv_freq)
    x = torch.randn(batch, seqlen, 3, dim, dtype=torch.float64, generator=g)
    # with float64 tables given, exact to float64
    out = apply_rotary_emb(x, angles.cos(), angles.sin(), interleaved=True)
    torch.testing.assert_close(out, _complex_rope(x, angles), rtol=1e-13, atol=1e-13)
    # the module builds fp32 tables from fp32 positions and frequencies, as flash-attn does
    q = torch.randn(batch, seqlen, 4, dim, generator=g)
    qkv = torch.stack([q, q, q], dim=2)
    out = RotaryEmbedding(dim=dim, interleaved=True)(qkv)
    angles32 = torch.outer(torch.arange(seqlen, dtype=torch.float32), inv_freq.float()).double()
    torch.testing.assert_close(out[:, :, 0].double(), _complex_rope(q, angles32), rtol=1e-6, atol=1e-6)
    assert torch.equal(out[:, :, 2], q)


@standin_only
def test_rotary_packed_forms_and_offsets_agree():
    """qkv (5-D), GQA qkv (4-D, num_heads_q), packed varlen with cu_seqlens and per-sequence offsets
    all rotate each token as the plain (batch, seqlen) form does at the same position."""
    g = torch.Generator().manual_seed(5)
    dim, seqlen = 8, 6
    rotary = RotaryEmbedding(dim=dim)
    rotary._update_cos_sin_cache(32, device=torch.device("cpu"), dtype=torch.float64)
    cos, sin = rotary._cos_cached, rotary._sin_cached
    qkv = torch.randn(2, seqlen, 3, 2, dim, dtype=torch.float64, generator=g)
    out = rotary(qkv)
    torch.testing.assert_close(out[:, :, 1], apply_rotary_emb(qkv[:, :, 1], cos, sin))
    gqa = torch.randn(2, seqlen, 4 + 2 * 1, dim, dtype=torch.float64, generator=g)
    out = rotary(gqa, num_heads_q=4)
    torch.testing.assert_close(out[:, :, :5], apply_rotary_emb(gqa[:, :, :5], cos, sin))
    assert torch.equal(out[:, :, 5:], gqa[:, :, 5:])
    x = torch.randn(2, seqlen, 3, dim, dtype=torch.float64, generator=g)
    offsets = torch.tensor([0, 4])
    packed = apply_rotary_emb(torch.cat([x[0, :4], x[1, :5]]), cos, sin, seqlen_offsets=offsets,
                              cu_seqlens=torch.tensor([0, 4, 9], dtype=torch.int32), max_seqlen=5)
    torch.testing.assert_close(packed[:4], apply_rotary_emb(x[:1, :4], cos, sin)[0])
    torch.testing.assert_close(packed[4:], apply_rotary_emb(x[1:, :5], cos, sin, seqlen_offsets=4)[0])


# ---------------------------------------------------------------- layer norm


@standin_only
@pytest.mark.parametrize("device", DEVICES)
def test_rms_norm_matches_torch_and_transformers(device):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    g = torch.Generator().manual_seed(6)
    x = torch.randn(3, 5, 32, dtype=torch.float64, generator=g).to(device).requires_grad_()
    w = (1 + 0.1 * torch.randn(32, dtype=torch.float64, generator=g)).to(device).requires_grad_()
    out = layer_norm_fn(x, w, None, eps=1e-5, is_rms_norm=True)
    ref = F.rms_norm(x, (32,), w, eps=1e-5)
    torch.testing.assert_close(out, ref, rtol=1e-13, atol=1e-13)
    up = torch.randn(out.shape, dtype=torch.float64, generator=g).to(device)
    for a, b in zip(torch.autograd.grad(out, (x, w), up), torch.autograd.grad(ref, (x, w), up), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # fp32 against transformers' LLaMA RMSNorm (what nanotron's TritonRMSNorm stands for)
    hf = LlamaRMSNorm(32, eps=1e-5).to(device)
    with torch.no_grad():
        hf.weight.copy_(w)
        torch.testing.assert_close(layer_norm_fn(x.float(), w.float(), None, eps=1e-5, is_rms_norm=True),
                                   hf(x.float()), rtol=1e-6, atol=1e-6)
        # bf16 in and out, normalised and scaled in fp32 before the one rounding
        x16, w16 = x.bfloat16(), w.bfloat16()
        out16 = layer_norm_fn(x16, w16, None, eps=1e-5, is_rms_norm=True)
        assert out16.dtype == torch.bfloat16
        torch.testing.assert_close(out16, F.rms_norm(x16.float(), (32,), w16.float(), eps=1e-5).bfloat16())


@standin_only
def test_residual_prenorm_and_layer_norm():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(4, 16, generator=g).bfloat16()
    residual = torch.randn(4, 16, generator=g).bfloat16()
    w, b = 1 + 0.1 * torch.randn(16, generator=g), 0.1 * torch.randn(16, generator=g)
    out, res = layer_norm_fn(x, w, None, residual=residual, eps=1e-6, prenorm=True, is_rms_norm=True)
    total = x.float() + residual.float()
    assert res.dtype == torch.bfloat16 and out.dtype == torch.bfloat16
    torch.testing.assert_close(res, total.bfloat16())
    torch.testing.assert_close(out, F.rms_norm(total, (16,), w, eps=1e-6).bfloat16())
    _, res32 = layer_norm_fn(x, w, None, eps=1e-6, prenorm=True, residual_in_fp32=True, is_rms_norm=True)
    assert res32.dtype == torch.float32 and torch.equal(res32, x.float())
    x64, w64, b64 = x.double(), w.double(), b.double()
    torch.testing.assert_close(layer_norm_fn(x64, w64, b64, eps=1e-6), F.layer_norm(x64, (16,), w64, b64, eps=1e-6),
                               rtol=1e-13, atol=1e-13)


# ---------------------------------------------------------------- nanotron


def test_nanotron_imports_every_name_it_needs_and_unprovided_ones_say_so():
    import importlib

    for name in ("nanotron.models.llama", "nanotron.models.qwen", "nanotron.nn.attention", "nanotron.nn.rotary",
                 "nanotron.nn.layer_norm", "nanotron.nn.ring_attention", "nanotron.nn.llama3_ring_attention",
                 "nanotron.logging.base", "nanotron.trainer"):
        importlib.import_module(name)
    if STANDIN:
        from flash_attn import bert_padding, flash_attn_with_kvcache

        for stub in (flash_attn_with_kvcache, bert_padding.unpad_input):
            with pytest.raises(NotImplementedError, match="test stand-in"):
                stub()


@pytest.fixture
def cpu_world():
    """nanotron's ParallelContext for one process on the CPU (gloo), through the shim."""
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: nanotron places itself there, the CPU shim is not used")
    import cpu_placement
    import nanotron.distributed as dist
    from nanotron.parallel import ParallelContext

    cpu_placement.install()
    started_here = not dist.is_initialized()
    try:
        context = ParallelContext(tensor_parallel_size=1, pipeline_parallel_size=1, data_parallel_size=1)
        assert dist.get_backend() == "gloo"
        yield context
    finally:
        if started_here and dist.is_initialized():
            dist.destroy_process_group()
        cpu_placement.uninstall()


def test_shim_answers_nanotrons_cuda_calls(cpu_world):
    import nanotron.trainer
    from nanotron.logging.timers import nanotron_timer

    assert torch.empty(2, device="cuda").device.type == "cpu"
    assert torch.ones(2).cuda().device.type == "cpu"
    assert torch.ones(2).to("cuda:0", torch.float64).device.type == "cpu"
    assert torch.zeros(1, device=torch.cuda.current_device()).device.type == "cpu"
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    assert torch.cuda.max_memory_allocated() == 0
    for _ in range(2):  # trainer.train() asks for this CUDA timer again at every step
        timer = nanotron_timer("test_engine_standins", "cuda", cuda_sync=False, enabled=True)
        timer.start()
        timer.end()
    assert timer.call_count == 2
    # the trainer's first step after resuming with the optimizer: states "to the GPU", asserted there
    state = {"state": {0: {"exp_avg": torch.zeros(2)}}}
    nanotron.trainer.state_dict_to_device(state, "cuda")
    assert state["state"][0]["exp_avg"].device.type == "cpu"


def test_llama_builds_and_runs_on_cpu_like_transformers(cpu_world):
    """nanotron's LlamaForTraining, built by build_model (device "cuda" in its code), runs forward
    and backward on the CPU, and its loss is transformers' LlamaForCausalLM's with the same weights."""
    from nanotron.config import LlamaConfig as NanotronLlamaConfig
    from nanotron.config import ParallelismArgs
    from nanotron.models.base import build_model
    from nanotron.models.llama import LlamaForTraining
    from transformers import LlamaConfig, LlamaForCausalLM

    shape = dict(hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2,
                 num_hidden_layers=2, vocab_size=256, max_position_embeddings=64, rms_norm_eps=1e-5,
                 rope_theta=10000.0, tie_word_embeddings=False)
    config = NanotronLlamaConfig(**shape, rope_interleaved=False)
    model = build_model(
        lambda: LlamaForTraining(config=config, parallel_context=cpu_world,
                                 parallel_config=ParallelismArgs(dp=1, pp=1, tp=1)),
        parallel_context=cpu_world, dtype=torch.float32,
    )
    params = dict(model.named_parameters())
    assert {p.device.type for p in params.values()} == {"cpu"}
    g = torch.Generator().manual_seed(8)
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g) if "norm" in name else 0.05 * torch.randn(p.shape, generator=g))

    hf = LlamaForCausalLM(LlamaConfig(**shape, attention_bias=False, attn_implementation="sdpa")).eval()
    head_dim, layer = 8, "model.decoder.{}.pp_block."
    with torch.no_grad():
        hf.model.embed_tokens.weight.copy_(params["model.token_position_embeddings.pp_block.token_embedding.weight"])
        hf.model.norm.weight.copy_(params["model.final_layer_norm.pp_block.weight"])
        hf.lm_head.weight.copy_(params["model.lm_head.pp_block.weight"])
        for i, block in enumerate(hf.model.layers):
            pre = layer.format(i)
            q, k, v = params[pre + "attn.qkv_proj.weight"].split([4 * head_dim, 2 * head_dim, 2 * head_dim])
            gate, up = params[pre + "mlp.gate_up_proj.weight"].split([48, 48])
            for target, source in ((block.self_attn.q_proj, q), (block.self_attn.k_proj, k),
                                   (block.self_attn.v_proj, v), (block.mlp.gate_proj, gate), (block.mlp.up_proj, up),
                                   (block.self_attn.o_proj, params[pre + "attn.o_proj.weight"]),
                                   (block.mlp.down_proj, params[pre + "mlp.down_proj.weight"]),
                                   (block.input_layernorm, params[pre + "input_layernorm.weight"]),
                                   (block.post_attention_layernorm, params[pre + "post_attention_layernorm.weight"])):
                target.weight.copy_(source)

    ids = torch.randint(0, 256, (2, 17), generator=g)
    ones = torch.ones(2, 16, dtype=torch.bool)
    loss = model(input_ids=ids[:, :-1], input_mask=ones, label_ids=ids[:, 1:], label_mask=ones)["loss"]
    loss.backward()
    with torch.no_grad():
        hf_loss = F.cross_entropy(hf(input_ids=ids[:, :-1]).logits.reshape(-1, 256), ids[:, 1:].reshape(-1))
    assert abs(loss.item() - hf_loss.item()) <= 1e-5 * hf_loss.item()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params.values())
