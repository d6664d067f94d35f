"""Test stand-in for flash_attn.flash_attn_interface: exact attention in plain torch.

Semantics follow flash-attn 2's docstrings: q/k/v are packed (total_tokens, heads, head_dim); k/v
may have fewer heads than q (GQA/MQA: query head h reads kv head h // (heads_q // heads_k)); causal
masks are aligned to the bottom-right corner when a sequence's q and k lengths differ; sliding
windows and softcap are applied as flash-attn does. Rows with no key to attend to give zeros, as do
packed rows past cu_seqlens_q[-1]. Scores, softmax and the weighted sum run in fp32 (fp64 for fp64
inputs), and the result is cast back to q's dtype. With return_attn_probs, (out, softmax_lse, None)
as flash-attn returns without dropout: softmax_lse (nheads, total_q) is the logsumexp of each row
of scaled scores (-inf where no key is visible; nanotron's Qwen2 logs it). Not implemented:
dropout (random), ALiBi, paged KV caches.
"""

import torch

from ._standin import compute_dtype, not_provided


def _allowed(seqlen_q, seqlen_k, causal, window_size, device):
    """[seqlen_q, seqlen_k] bool: may query i attend key j. Query i sits at key position
    i + seqlen_k - seqlen_q (bottom-right alignment); the window reaches window_size[0] keys back
    and window_size[1] keys forward of it, a negative size meaning unbounded; causal caps forward at 0."""
    left, right = window_size
    if causal:
        right = 0
    i = torch.arange(seqlen_q, device=device)[:, None] + (seqlen_k - seqlen_q)
    j = torch.arange(seqlen_k, device=device)[None, :]
    ok = torch.ones(seqlen_q, seqlen_k, dtype=torch.bool, device=device)
    if right >= 0:
        ok &= j <= i + right
    if left >= 0:
        ok &= j >= i - left
    return ok


def _attend(q, k, v, scale, causal, window_size, softcap):
    """One sequence: q [sq, hq, d], k [sk, hk, d], v [sk, hk, dv] -> ([sq, hq, dv] in q's dtype,
    logsumexp [hq, sq])."""
    n_rep = q.shape[1] // k.shape[1]
    acc = compute_dtype(q.dtype)
    k = k.to(acc).repeat_interleave(n_rep, dim=1)
    v = v.to(acc).repeat_interleave(n_rep, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q.to(acc), k) * scale
    if softcap > 0:
        scores = softcap * torch.tanh(scores / softcap)
    allowed = _allowed(q.shape[0], k.shape[0], causal, window_size, q.device)
    # A query with no allowed key would softmax a row of -inf (NaN, and NaN gradients): give such
    # rows finite scores, then zero their probabilities, which is what flash-attn outputs.
    empty = ~allowed.any(dim=-1, keepdim=True)
    scores = scores.masked_fill(~allowed, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    probs = torch.softmax(scores.masked_fill(empty, 0.0), dim=-1).masked_fill(empty, 0.0)
    return torch.einsum("hqk,khd->qhd", probs, v).to(q.dtype), lse


def flash_attn_varlen_func(
    q,
    k,
    v,
    cu_seqlens_q,
    cu_seqlens_k,
    max_seqlen_q,
    max_seqlen_k,
    dropout_p=0.0,
    softmax_scale=None,
    causal=False,
    window_size=(-1, -1),
    softcap=0.0,
    alibi_slopes=None,
    deterministic=False,
    return_attn_probs=False,
    block_table=None,
):
    """q: (total_q, nheads, d), k/v: (total_k, nheads_k, d[v]); cu_seqlens_*: (batch + 1,) int32
    offsets of each packed sequence. Returns (total_q, nheads, dv). max_seqlen_* only size
    flash-attn's kernel launch, so they are not needed here."""
    if dropout_p > 0.0:
        raise NotImplementedError("test stand-in: flash_attn_varlen_func dropout not provided")
    if alibi_slopes is not None or block_table is not None:
        raise NotImplementedError("test stand-in: flash_attn_varlen_func alibi_slopes/block_table not provided")
    assert q.shape[1] % k.shape[1] == 0, "heads of q must be a multiple of heads of k/v"
    scale = q.shape[-1] ** -0.5 if softmax_scale is None else softmax_scale
    bounds_q, bounds_k = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    outs, lses = [], []
    for q0, q1, k0, k1 in zip(bounds_q[:-1], bounds_q[1:], bounds_k[:-1], bounds_k[1:], strict=True):
        out, lse = _attend(q[q0:q1], k[k0:k1], v[k0:k1], scale, causal, tuple(window_size), softcap)
        outs.append(out)
        lses.append(lse)
    tail = q.shape[0] - bounds_q[-1]  # packed rows no sequence covers (flash-attn leaves them unset)
    out = torch.cat([*outs, q.new_zeros(tail, q.shape[1], v.shape[-1])], dim=0)
    if not return_attn_probs:
        return out
    lse_dtype = compute_dtype(q.dtype)
    lse = torch.cat([*lses, torch.full((q.shape[1], tail), float("-inf"), dtype=lse_dtype, device=q.device)], dim=1)
    return out, lse, None


def flash_attn_varlen_kvpacked_func(q, kv, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *args, **kwargs):
    """kv: (total_k, 2, nheads_k, d)."""
    return flash_attn_varlen_func(
        q, kv[:, 0], kv[:, 1], cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *args, **kwargs
    )


def flash_attn_varlen_qkvpacked_func(qkv, cu_seqlens, max_seqlen, *args, **kwargs):
    """qkv: (total, 3, nheads, d)."""
    return flash_attn_varlen_func(
        qkv[:, 0], qkv[:, 1], qkv[:, 2], cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, *args, **kwargs
    )


def flash_attn_func(q, k, v, *args, **kwargs):
    """Padded batch form: q (batch, seqlen_q, nheads, d), k/v (batch, seqlen_k, nheads_k, d)."""
    (batch, seqlen_q), seqlen_k = q.shape[:2], k.shape[1]
    cu_q = torch.arange(0, (batch + 1) * seqlen_q, seqlen_q, dtype=torch.int32, device=q.device)
    cu_k = torch.arange(0, (batch + 1) * seqlen_k, seqlen_k, dtype=torch.int32, device=q.device)
    out = flash_attn_varlen_func(
        q.reshape(batch * seqlen_q, *q.shape[2:]),
        k.reshape(batch * seqlen_k, *k.shape[2:]),
        v.reshape(batch * seqlen_k, *v.shape[2:]),
        cu_q, cu_k, seqlen_q, seqlen_k, *args, **kwargs,
    )
    if isinstance(out, tuple):  # return_attn_probs: lse (batch, nheads, seqlen_q) in this form
        out, lse, probs = out
        return out.view(batch, seqlen_q, *out.shape[1:]), lse.view(-1, batch, seqlen_q).transpose(0, 1), probs
    return out.view(batch, seqlen_q, *out.shape[1:])


def flash_attn_kvpacked_func(q, kv, *args, **kwargs):
    return flash_attn_func(q, kv[:, :, 0], kv[:, :, 1], *args, **kwargs)


def flash_attn_qkvpacked_func(qkv, *args, **kwargs):
    return flash_attn_func(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], *args, **kwargs)


# Imported by nanotron (inference and ring attention) but not on its training path.
flash_attn_with_kvcache = not_provided("flash_attn_interface.flash_attn_with_kvcache")
_flash_attn_forward = not_provided("flash_attn_interface._flash_attn_forward")
_flash_attn_backward = not_provided("flash_attn_interface._flash_attn_backward")
_flash_attn_varlen_forward = not_provided("flash_attn_interface._flash_attn_varlen_forward")
_flash_attn_varlen_backward = not_provided("flash_attn_interface._flash_attn_varlen_backward")
