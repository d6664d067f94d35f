"""Test stand-in: flash_attn.layers."""
