"""Test stand-in for flash_attn.bert_padding (used by nanotron only at inference)."""

from ._standin import not_provided

unpad_input = not_provided("bert_padding.unpad_input")
pad_input = not_provided("bert_padding.pad_input")
index_first_axis = not_provided("bert_padding.index_first_axis")
index_put_first_axis = not_provided("bert_padding.index_put_first_axis")
