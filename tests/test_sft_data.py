"""Chat template rendering, prompt/completion records and loss masks for SFT."""

import pytest

from smolrecipe import PROJECT_ROOT
from smolrecipe.data.chats import SFTStats, completion_mask, conversation_records, convert, write_sft_dataset
from smolrecipe.errors import UserError

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "List two fruits."},
    {"role": "assistant", "content": "- apple\n- pear"},
    {"role": "user", "content": "And one more?"},
    {"role": "assistant", "content": "- plum"},
]


def test_chatml_places_the_special_tokens_exactly(hf_tokenizer):
    text = hf_tokenizer.apply_chat_template(CHAT, tokenize=False)
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n"
                    "<|im_start|>user\nList two fruits.<|im_end|>\n"
                    "<|im_start|>assistant\n- apple\n- pear<|im_end|>\n"
                    "<|im_start|>user\nAnd one more?<|im_end|>\n"
                    "<|im_start|>assistant\n- plum<|im_end|>\n")
    ids = hf_tokenizer.apply_chat_template(CHAT, tokenize=True, return_dict=True)["input_ids"]
    start, end = (hf_tokenizer.convert_tokens_to_ids(t) for t in ("<|im_start|>", "<|im_end|>"))
    assert ids.count(start) == ids.count(end) == len(CHAT)  # one special token each, never split


def test_llama3_template_renders_headers_and_eot(hf_tokenizer):
    template = (PROJECT_ROOT / "tokenizer" / "llama3_chat.jinja").read_text()
    text = hf_tokenizer.apply_chat_template(CHAT[:3], tokenize=False, chat_template=template, add_generation_prompt=False)
    bos = hf_tokenizer.bos_token
    assert text == (f"{bos}<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                    "<|start_header_id|>user<|end_header_id|>\n\nList two fruits.<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\n- apple\n- pear<|eot_id|>")
    prompt = hf_tokenizer.apply_chat_template(CHAT[:2], tokenize=False, chat_template=template, add_generation_prompt=True)
    assert prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_assistant_mask_covers_exactly_the_assistant_turns(hf_tokenizer):
    """The {% generation %} mask transformers/TRL use for assistant-only loss (the local backend)."""
    out = hf_tokenizer.apply_chat_template(CHAT, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    trained = hf_tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if m])
    assert trained == "- apple\n- pear<|im_end|>- plum<|im_end|>"
    # nothing of the system/user turns or the assistant header carries loss
    assert "List two fruits" not in trained and "assistant" not in trained


def test_one_record_per_assistant_turn_with_the_whole_history_as_prompt(hf_tokenizer):
    records = conversation_records(CHAT, hf_tokenizer)
    assert [r["completion"] for r in records] == ["- apple\n- pear", "- plum"]
    assert records[0]["prompt"] == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nList two fruits.<|im_end|>\n"
                                    "<|im_start|>assistant\n")
    assert records[1]["prompt"].startswith(records[0]["prompt"] + "- apple\n- pear<|im_end|>\n")
    for record in records:  # prompt + completion + eos (what nanotron tokenizes) is the template's own rendering
        assert record["prompt"] + record["completion"] + hf_tokenizer.eos_token in hf_tokenizer.apply_chat_template(
            CHAT, tokenize=False)


def test_nanotron_mask_trains_on_the_completion_and_eos_only(hf_tokenizer):
    record = conversation_records(CHAT, hf_tokenizer)[1]
    ids, mask = completion_mask(record["prompt"], record["completion"], hf_tokenizer)
    assert hf_tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if m]) == "- plum<|im_end|>"
    assert hf_tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if not m]) == record["prompt"]
    assert ids[-1] == hf_tokenizer.eos_token_id


@pytest.mark.parametrize("messages, reason", [
    ([{"role": "narrator", "content": "x"}, {"role": "assistant", "content": "y"}], "unknown_role"),
    ([{"role": "user", "content": "  "}, {"role": "assistant", "content": "y"}], "empty_content"),
    ([{"role": "user", "content": "hi"}], "no_assistant_turn"),
    ([], "not_a_message_list"),
    (None, "not_a_message_list"),
    ([{"role": "user", "content": "word " * 400}, {"role": "assistant", "content": "ok"}], "longer_than_sequence"),
])
def test_bad_conversations_are_dropped_and_counted(hf_tokenizer, messages, reason):
    stats = SFTStats()
    records = list(convert([CHAT, messages], hf_tokenizer, max_tokens=128, stats=stats))
    assert len(records) == 2 and stats.kept == 1 and stats.records == 2
    assert stats.dropped == {reason: 1}


def test_the_dataset_folder_is_all_or_nothing(hf_tokenizer, tmp_path):
    def chats_then_crash():
        yield CHAT
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_sft_dataset(chats_then_crash(), hf_tokenizer, 128, tmp_path / "sft", progress=False)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UserError) as exc:
        write_sft_dataset([[{"role": "user", "content": "hi"}]], hf_tokenizer, 128, tmp_path / "sft", progress=False)
    assert exc.value.field == "sft.data" and list(tmp_path.iterdir()) == []
    manifest = write_sft_dataset([CHAT], hf_tokenizer, 128, tmp_path / "sft", progress=False)
    assert manifest["records"] == 2 and sorted(p.name for p in (tmp_path / "sft").iterdir()) == ["manifest.json", "train.parquet"]


def test_hub_chat_data_is_read_through_load_dataset_also_from_a_local_folder(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from smolrecipe.data.chats import check_sft_source, read_conversations
    from smolrecipe.recipe.schema import SFTData

    (tmp_path / "hub" / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([{"messages": CHAT, "source": "x"}] * 3),
                   tmp_path / "hub" / "data" / "train-00000-of-00001.parquet")
    data = SFTData(hf=str(tmp_path / "hub"), split="train")
    check_sft_source(data)
    assert list(read_conversations(data)) == [CHAT] * 3
    with pytest.raises(UserError) as exc:
        check_sft_source(data.model_copy(update={"messages_field": "conversation"}))
    assert exc.value.field == "sft.data.messages_field" and "messages" in exc.value.fix
