"""Chats (smol-smoltalk's `messages` format) -> the prompt/completion records nanotron's SFT reads.

nanotron (`data/sft_processing.py` at the pinned commit) tokenizes `prompt + completion + eos_token`
with the tokenizer's own special tokens, and puts the loss on every token after the prompt's.
So for each assistant turn we write:

- prompt: the conversation before that turn, rendered by the chat template with the generation
  prompt (the assistant header) appended, minus a leading BOS when the tokenizer adds one itself;
- completion: the turn's text as the template renders it, up to the tokenizer's eos token when
  the template's end-of-turn *is* that token (ChatML's <|im_end|>), because nanotron appends it;
  otherwise with the template's end-of-turn kept (LLaMA-3's <|eot_id|>; nanotron then appends
  <|end_of_text|>).

`completion_mask` reproduces nanotron's masking so tests and the local backend agree with it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from smolrecipe.atomic import staged_folder
from smolrecipe.data.conversations import malformed_reason
from smolrecipe.errors import UserError


@dataclass
class SFTStats:
    conversations: int = 0
    kept: int = 0
    records: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason -> conversations

    def as_dict(self) -> dict[str, Any]:
        return {"conversations": self.conversations, "kept": self.kept, "records": self.records,
                "dropped": dict(sorted(self.dropped.items()))}


def adds_bos(tokenizer) -> bool:
    ids = tokenizer("a").input_ids
    return tokenizer.bos_token_id is not None and bool(ids) and ids[0] == tokenizer.bos_token_id


def conversation_records(messages: list[dict], tokenizer) -> list[dict[str, str]]:
    """One {prompt, completion} per assistant turn (see the module docstring)."""
    strip_bos = adds_bos(tokenizer)
    eos = tokenizer.eos_token
    records = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not full.startswith(prompt):
            raise UserError("tokenizer.chat_template", "the template renders a turn differently depending on what follows it, "
                            "so a conversation cannot be split into prompt/completion records",
                            "use a template that renders each turn the same whatever follows (tokenizer/chatml.jinja does)")
        completion = full[len(prompt):]
        if eos and eos in completion:
            completion = completion[: completion.index(eos)]  # nanotron appends the eos itself
        else:
            completion = completion.rstrip("\n")  # template padding after the end-of-turn token
        if strip_bos and tokenizer.bos_token and prompt.startswith(tokenizer.bos_token):
            prompt = prompt[len(tokenizer.bos_token):]
        records.append({"prompt": prompt, "completion": completion})
    return records


def conversation_tokens(messages: list[dict], tokenizer) -> int:
    return len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])


def convert(conversations: Iterable[Any], tokenizer, max_tokens: int, stats: SFTStats | None = None):
    """Yield records of the usable conversations; count the others by reason in `stats`."""
    stats = stats if stats is not None else SFTStats()
    for messages in conversations:
        stats.conversations += 1
        reason = malformed_reason(messages)
        if reason is None and conversation_tokens(messages, tokenizer) > max_tokens:
            reason = "longer_than_sequence"
        if reason is not None:
            stats.dropped[reason] += 1
            continue
        records = conversation_records(messages, tokenizer)
        stats.kept += 1
        stats.records += len(records)
        yield from records


def completion_mask(prompt: str, completion: str, tokenizer) -> tuple[list[int], list[bool]]:
    """(input_ids, loss mask) exactly as nanotron's process_sft builds them for one record."""
    ids = tokenizer(f"{prompt}{completion}{tokenizer.eos_token}").input_ids
    prompt_len = len(tokenizer(prompt).input_ids)
    return ids, [i >= prompt_len for i in range(len(ids))]


# ---------------------------------------------------------------------------------------------
# The SFT dataset folder: <paths.data>/<recipe>/sft/{train.parquet, manifest.json}

SFT_FILE = "train.parquet"  # `datasets.load_dataset(folder, split="train")` finds it by name (nanotron, TRL)
WRITE_BATCH = 2048


def read_conversations(data) -> Iterator[Any]:
    """The `messages` of each record of a (resolved) recipe `sft.data`: hub dataset or local files."""
    from smolrecipe.data.sources import iter_records

    for row in iter_records(data):
        yield row.get(data.messages_field)


def check_sft_source(data) -> None:
    """Raise UserError before any output when the chat data cannot be read as the recipe says."""
    from smolrecipe.data.sources import first_stage_record

    first = first_stage_record(data, "sft.data", "chat records with a `messages` list (the tiny recipe's: tools/make_demo_corpus.py)")
    if data.messages_field not in first:
        raise UserError("sft.data.messages_field", f"field '{data.messages_field}' is not in the records",
                          f"use one of {sorted(first)}")


def write_sft_dataset(conversations: Iterable[Any], tokenizer, max_tokens: int, out: Path,
                      extra_manifest: dict[str, Any] | None = None, progress: bool = True) -> dict[str, Any]:
    """Convert and write `out/train.parquet` + `out/manifest.json`, all or nothing: everything is
    written into a sibling staging folder that replaces `out` only when complete."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm import tqdm

    stats = SFTStats()
    schema = pa.schema([("prompt", pa.string()), ("completion", pa.string())])
    with staged_folder(out) as staging:
        with pq.ParquetWriter(staging / SFT_FILE, schema) as writer:
            batch: list[dict] = []
            for record in convert(tqdm(conversations, desc="sft: conversations", unit=" conv", disable=not progress),
                                  tokenizer, max_tokens, stats):
                batch.append(record)
                if len(batch) >= WRITE_BATCH:
                    writer.write_table(pa.Table.from_pylist(batch, schema))
                    batch = []
            if batch:
                writer.write_table(pa.Table.from_pylist(batch, schema))
        if stats.records == 0:
            raise UserError("sft.data", f"no usable conversation among {stats.conversations:,} "
                              f"(dropped: {dict(stats.dropped)})", "check the chat data and training.sequence_length")
        manifest = {**(extra_manifest or {}), **stats.as_dict(), "max_tokens": max_tokens, "file": SFT_FILE}
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
