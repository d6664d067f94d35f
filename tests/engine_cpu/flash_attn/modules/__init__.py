"""Test stand-in: flash_attn.modules."""
