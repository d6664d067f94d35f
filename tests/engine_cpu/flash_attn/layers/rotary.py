"""Test stand-in for flash_attn.layers.rotary: exact rotary embeddings in plain torch.

`RotaryEmbedding` keeps flash-attn 2's constructor (dim, base, interleaved, scale_base,
pos_idx_in_fp32, device), attributes and cos/sin cache (nanotron's FlashRotaryEmbedding subclasses
it and overrides `_update_cos_sin_cache`), and its `forward(qkv, kv=None, seqlen_offset=0,
max_seqlen=None, num_heads_q=None)`. The rotation is done as flash-attn's Triton kernel does it:
cos/sin from the cache (in the input's dtype), arithmetic in fp32 (fp64 for fp64), result cast back,
dims past 2 * cos.shape[-1] passed through. One difference: flash-attn rotates its inputs in place;
this returns new tensors and leaves inputs as they were (nanotron always uses the returned tensors).
"""

import torch

from .._standin import compute_dtype


def rotate_half(x, interleaved=False):
    if not interleaved:
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((-x2, x1), dim=-1)
    x1, x2 = x[..., ::2], x[..., 1::2]
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


def _positions(x, seqlen_offsets, cu_seqlens):
    """Position of each token of x: [batch, seqlen] for padded x, [total] for packed x."""
    if cu_seqlens is None:
        batch, seqlen = x.shape[:2]
        pos = torch.arange(seqlen, device=x.device).expand(batch, seqlen)
        offsets = seqlen_offsets[:, None] if torch.is_tensor(seqlen_offsets) else seqlen_offsets
    else:
        lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
        seq_of_token = torch.repeat_interleave(torch.arange(len(lengths), device=x.device), lengths)
        pos = torch.arange(x.shape[0], device=x.device) - cu_seqlens.long()[seq_of_token]
        offsets = seqlen_offsets[seq_of_token] if torch.is_tensor(seqlen_offsets) else seqlen_offsets
    return pos + offsets


def apply_rotary_emb(
    x, cos, sin, interleaved=False, inplace=False, seqlen_offsets=0, cu_seqlens=None, max_seqlen=None
):
    """x: (batch, seqlen, nheads, headdim), or (total_seqlen, nheads, headdim) with cu_seqlens;
    cos, sin: (seqlen_rotary, rotary_dim / 2); seqlen_offsets: int or (batch,) tensor.
    Rotates the first rotary_dim dims of x (GPT-NeoX halves, or GPT-J even/odd pairs when
    interleaved). `inplace` is accepted but the result is always a new tensor (see module doc)."""
    pos = _positions(x, seqlen_offsets, cu_seqlens)
    acc = compute_dtype(x.dtype)
    cos, sin = cos[pos].to(acc), sin[pos].to(acc)  # [..., rotary_dim / 2], per token
    if interleaved:
        cos, sin = cos.repeat_interleave(2, dim=-1), sin.repeat_interleave(2, dim=-1)
    else:
        cos, sin = torch.cat((cos, cos), dim=-1), torch.cat((sin, sin), dim=-1)
    cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)  # broadcast over heads
    ro_dim = cos.shape[-1]
    rot = x[..., :ro_dim].to(acc)
    rot = (rot * cos + rotate_half(rot, interleaved) * sin).to(x.dtype)
    return torch.cat((rot, x[..., ro_dim:]), dim=-1)


apply_rotary_emb_func = apply_rotary_emb  # flash-attn's backward-compatible alias


def apply_rotary_emb_qkv_(
    qkv, cos, sin, cos_k=None, sin_k=None, interleaved=False, seqlen_offsets=0, num_heads_q=None
):
    """qkv: (batch, seqlen, 3, nheads, headdim) or (batch, seqlen, nheads_q + 2 * nheads_k, headdim)
    with num_heads_q given. Rotates q and k (k with cos_k/sin_k when given); v is unchanged."""
    cos_k = cos if cos_k is None else cos_k
    sin_k = sin if sin_k is None else sin_k
    if qkv.dim() == 5:
        q = apply_rotary_emb(qkv[:, :, 0], cos, sin, interleaved, seqlen_offsets=seqlen_offsets)
        k = apply_rotary_emb(qkv[:, :, 1], cos_k, sin_k, interleaved, seqlen_offsets=seqlen_offsets)
        return torch.stack((q, k, qkv[:, :, 2]), dim=2)
    assert qkv.dim() == 4 and num_heads_q is not None
    num_heads_k = (qkv.shape[2] - num_heads_q) // 2
    assert qkv.shape[2] == num_heads_q + 2 * num_heads_k
    q, k, v = qkv.split((num_heads_q, num_heads_k, num_heads_k), dim=2)
    q = apply_rotary_emb(q, cos, sin, interleaved, seqlen_offsets=seqlen_offsets)
    k = apply_rotary_emb(k, cos_k, sin_k, interleaved, seqlen_offsets=seqlen_offsets)
    return torch.cat((q, k, v), dim=2)


def apply_rotary_emb_kv_(kv, cos, sin, interleaved=False, seqlen_offsets=0):
    """kv: (batch, seqlen, 2, nheads, headdim). Rotates k; v is unchanged."""
    k = apply_rotary_emb(kv[:, :, 0], cos, sin, interleaved, seqlen_offsets=seqlen_offsets)
    return torch.stack((k, kv[:, :, 1]), dim=2)


class RotaryEmbedding(torch.nn.Module):
    """flash-attn 2's RotaryEmbedding (RoPE; XPos when scale_base is set), in plain torch."""

    def __init__(self, dim, base=10000.0, interleaved=False, scale_base=None, pos_idx_in_fp32=True, device=None):
        super().__init__()
        self.dim = dim
        self.base = float(base)
        self.pos_idx_in_fp32 = pos_idx_in_fp32
        self.register_buffer("inv_freq", self._compute_inv_freq(device), persistent=False)
        self.interleaved = interleaved
        self.scale_base = scale_base
        scale = (
            (torch.arange(0, dim, 2, device=device, dtype=torch.float32) + 0.4 * dim) / (1.4 * dim)
            if scale_base is not None
            else None
        )
        self.register_buffer("scale", scale, persistent=False)
        self._seq_len_cached = 0
        self._cos_cached = None
        self._sin_cached = None
        self._cos_k_cached = None
        self._sin_k_cached = None

    def _compute_inv_freq(self, device=None):
        return 1.0 / (self.base ** (torch.arange(0, self.dim, 2, device=device, dtype=torch.float32) / self.dim))

    def _update_cos_sin_cache(self, seqlen, device=None, dtype=None):
        # Rebuilt when longer, on another device or dtype, or leaving inference mode (as flash-attn).
        if (
            seqlen > self._seq_len_cached
            or self._cos_cached is None
            or self._cos_cached.device != device
            or self._cos_cached.dtype != dtype
            or (self.training and self._cos_cached.is_inference())
        ):
            self._seq_len_cached = seqlen
            # Positions and frequencies in fp32 even for a bf16 model (inv_freq recomputed if cast).
            if self.pos_idx_in_fp32:
                t = torch.arange(seqlen, device=device, dtype=torch.float32)
                inv_freq = self._compute_inv_freq(device) if self.inv_freq.dtype != torch.float32 else self.inv_freq
            else:
                t = torch.arange(seqlen, device=device, dtype=self.inv_freq.dtype)
                inv_freq = self.inv_freq
            freqs = torch.outer(t, inv_freq)
            if self.scale is None:
                self._cos_cached = torch.cos(freqs).to(dtype)
                self._sin_cached = torch.sin(freqs).to(dtype)
            else:
                power = (torch.arange(seqlen, dtype=self.scale.dtype, device=self.scale.device) - seqlen // 2) / self.scale_base
                scale = self.scale.to(device=power.device) ** power[:, None]
                self._cos_cached = (torch.cos(freqs) * scale).to(dtype)
                self._sin_cached = (torch.sin(freqs) * scale).to(dtype)
                self._cos_k_cached = (torch.cos(freqs) / scale).to(dtype)
                self._sin_k_cached = (torch.sin(freqs) / scale).to(dtype)

    def forward(self, qkv, kv=None, seqlen_offset=0, max_seqlen=None, num_heads_q=None):
        """qkv: (batch, seqlen, 3, nheads, headdim), or (batch, seqlen, nheads_q + 2 * nheads_k,
        headdim) with num_heads_q, or just q (batch, seqlen, nheads, headdim) when kv
        (batch, seqlen, 2, nheads_k, headdim) is given. Returns qkv, or (q, kv), rotated."""
        seqlen = qkv.shape[1]
        if max_seqlen is not None:
            self._update_cos_sin_cache(max_seqlen, device=qkv.device, dtype=qkv.dtype)
        elif isinstance(seqlen_offset, int):
            self._update_cos_sin_cache(seqlen + seqlen_offset, device=qkv.device, dtype=qkv.dtype)
        cos_k = self._cos_cached if self.scale is None else self._cos_k_cached
        sin_k = self._sin_cached if self.scale is None else self._sin_k_cached
        if kv is None:
            return apply_rotary_emb_qkv_(
                qkv, self._cos_cached, self._sin_cached, cos_k, sin_k,
                interleaved=self.interleaved, seqlen_offsets=seqlen_offset, num_heads_q=num_heads_q,
            )
        q = apply_rotary_emb(
            qkv, self._cos_cached, self._sin_cached, interleaved=self.interleaved, seqlen_offsets=seqlen_offset
        )
        kv = apply_rotary_emb_kv_(kv, cos_k, sin_k, interleaved=self.interleaved, seqlen_offsets=seqlen_offset)
        return q, kv
