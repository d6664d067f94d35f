"""Test stand-in: flash_attn.ops."""
