"""Test stand-in for flash_attn.modules.mha: nanotron's Qwen2 model imports this name from here."""

from ..flash_attn_interface import flash_attn_varlen_kvpacked_func  # noqa: F401
