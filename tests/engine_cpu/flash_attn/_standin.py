"""Helpers shared by the flash_attn test stand-in's modules."""

import torch


def not_provided(name):
    """A callable that says plainly that the stand-in does not implement `name`."""

    def stub(*args, **kwargs):
        raise NotImplementedError(f"test stand-in: flash_attn {name} not provided")

    stub.__name__ = name.rsplit(".", 1)[-1]
    stub.__qualname__ = stub.__name__
    return stub


def compute_dtype(dtype):
    """flash-attn's kernels load half-precision inputs into fp32 registers; fp64 stays fp64 here."""
    return torch.promote_types(dtype, torch.float32)
