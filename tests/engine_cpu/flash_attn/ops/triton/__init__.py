"""Test stand-in: flash_attn.ops.triton (plain torch here, no Triton)."""
