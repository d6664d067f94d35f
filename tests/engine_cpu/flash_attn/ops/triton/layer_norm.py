"""Test stand-in for flash_attn.ops.triton.layer_norm: exact (residual +) LayerNorm / RMSNorm in plain torch.

As flash-attn's Triton kernel: x (+ residual) is summed and normalised in fp32 (fp64 here for fp64
inputs), weight and bias are applied in that precision, the output is cast to x's dtype, and with
prenorm the pre-norm sum is returned too, in residual's dtype (fp32 with residual_in_fp32, else
x's dtype). Not implemented: dropout (random), rowscale, the parallel x1/weight1/bias1 inputs, and
preallocated out/residual_out.
"""

import torch

from ..._standin import compute_dtype


def layer_norm_fn(
    x,
    weight,
    bias,
    residual=None,
    x1=None,
    weight1=None,
    bias1=None,
    eps=1e-6,
    dropout_p=0.0,
    rowscale=None,
    prenorm=False,
    residual_in_fp32=False,
    is_rms_norm=False,
    return_dropout_mask=False,
    out=None,
    residual_out=None,
):
    if dropout_p > 0.0:
        raise NotImplementedError("test stand-in: layer_norm_fn dropout not provided")
    if any(t is not None for t in (x1, weight1, bias1, rowscale, out, residual_out)):
        raise NotImplementedError("test stand-in: layer_norm_fn x1/weight1/bias1/rowscale/out not provided")
    acc = compute_dtype(x.dtype)
    h = x.to(acc) if residual is None else x.to(acc) + residual.to(acc)
    if is_rms_norm:
        y = h * torch.rsqrt(h.square().mean(dim=-1, keepdim=True) + eps)
    else:
        centred = h - h.mean(dim=-1, keepdim=True)
        y = centred * torch.rsqrt(centred.square().mean(dim=-1, keepdim=True) + eps)
    y = y * weight.to(acc)
    if bias is not None:
        y = y + bias.to(acc)
    y = y.to(x.dtype)
    if prenorm:
        residual_dtype = residual.dtype if residual is not None else (torch.float32 if residual_in_fp32 else x.dtype)
        y = (y, h.to(residual_dtype))
    else:
        y = (y,)
    if return_dropout_mask:  # no dropout, so no masks (flash-attn returns None for them too)
        y = (*y, None, None)
    return y[0] if len(y) == 1 else y


def rms_norm_fn(x, weight, bias, residual=None, x1=None, weight1=None, bias1=None, eps=1e-6, dropout_p=0.0,
                rowscale=None, prenorm=False, residual_in_fp32=False, return_dropout_mask=False,
                out=None, residual_out=None):
    return layer_norm_fn(x, weight, bias, residual, x1, weight1, bias1, eps, dropout_p, rowscale, prenorm,
                         residual_in_fp32, True, return_dropout_mask, out, residual_out)
