"""Preference pairs -> the prompt / chosen / rejected records TRL's DPO and ORPO trainers read.

A pair comes as message lists (HuggingFaceH4/ultrafeedback_binarized: `chosen` and `rejected` are
the whole conversation, ending in the assistant turn, and share everything before it) or as plain
strings (a user prompt and two answers). Both are rendered with the recipe's chat template, as the
SFT records are (smolrecipe.data.chats.conversation_records):

- prompt: the conversation before the answer, with the generation prompt (assistant header);
- chosen / rejected: the answer as the template renders it, up to the end-of-turn token, which
  both trainers append themselves (TRL: `add_eos` / `add_eos_token_if_needed`).

Given as text, not token ids, the records are what TRL's trainers take on either backend; the
held-out pairs are scored by the eval suite's `pairs:<name>` task from the same strings.

The folder, <paths.data>/<recipe>/<stage>/: train.parquet, heldout.parquet, manifest.json,
written all or nothing; a rerun with the same inputs (fingerprint) does nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from smolrecipe.atomic import staged_folder
from smolrecipe.data.chats import conversation_records
from smolrecipe.data.conversations import malformed_reason
from smolrecipe.errors import UserError

TRAIN_FILE, HELDOUT_FILE = "train.parquet", "heldout.parquet"
COLUMNS = ("prompt", "chosen", "rejected")
WRITE_BATCH = 2048


@dataclass
class PairStats:
    read: int = 0  # records read
    records: int = 0  # training pairs (rows of train.parquet: what smolrecipe.data.verify checks)
    heldout: int = 0  # rows of heldout.parquet
    dropped: Counter = field(default_factory=Counter)  # reason -> records

    def as_dict(self) -> dict[str, Any]:
        return {"read": self.read, "records": self.records, "heldout": self.heldout,
                "dropped": dict(sorted(self.dropped.items()))}


def as_conversations(record: dict, data) -> tuple[list[dict], list[dict]] | str:
    """(chosen conversation, rejected conversation) of a raw record, or why it cannot be used."""
    prompt, chosen, rejected = (record.get(f) for f in (data.prompt_field, data.chosen_field, data.rejected_field))
    if isinstance(chosen, str) and isinstance(rejected, str):
        if not isinstance(prompt, str) or not prompt.strip():
            return "empty_prompt"
        turn = [{"role": "user", "content": prompt}]
        return turn + [{"role": "assistant", "content": chosen}], turn + [{"role": "assistant", "content": rejected}]
    if isinstance(chosen, list) and isinstance(rejected, list):
        for messages in (chosen, rejected):
            reason = malformed_reason(messages)
            if reason is not None:
                return reason
            if messages[-1]["role"] != "assistant":
                return "not_ending_in_assistant_turn"
        if chosen[:-1] != rejected[:-1]:
            return "different_prompts"
        return chosen, rejected
    return "not_a_pair"


def pair_record(chosen: list[dict], rejected: list[dict], tokenizer) -> dict[str, str]:
    """{prompt, chosen, rejected} as text (see the module docstring)."""
    good, bad = conversation_records(chosen, tokenizer)[-1], conversation_records(rejected, tokenizer)[-1]
    return {"prompt": good["prompt"], "chosen": good["completion"], "rejected": bad["completion"]}


def pair_tokens(pair: dict[str, str], tokenizer) -> int:
    """Tokens of the longer side as the trainers build it: prompt + response + end of turn."""
    eos = tokenizer.eos_token or ""
    return max(len(tokenizer(pair["prompt"] + pair[side] + eos, add_special_tokens=False).input_ids)
               for side in ("chosen", "rejected"))


def is_heldout(prompt: str, fraction: float) -> bool:
    """A stable draw from the prompt's text: the same pairs are held out on every rerun and machine."""
    if fraction <= 0:
        return False
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def convert(records: Iterable[dict], data, tokenizer, max_tokens: int, stats: PairStats) -> Iterator[tuple[bool, dict]]:
    """(held out?, pair) for each usable record; the others counted by reason in `stats`."""
    for record in records:
        if data.max_pairs is not None and stats.read >= data.max_pairs:
            return
        stats.read += 1
        found = as_conversations(record, data) if isinstance(record, dict) else "not_a_record"
        if isinstance(found, str):
            stats.dropped[found] += 1
            continue
        pair = pair_record(*found, tokenizer)
        if pair["chosen"].strip() == pair["rejected"].strip():
            stats.dropped["chosen_equals_rejected"] += 1
            continue
        if pair_tokens(pair, tokenizer) > max_tokens:
            stats.dropped["longer_than_max_length"] += 1
            continue
        heldout = is_heldout(pair["prompt"], data.heldout_fraction)
        stats.heldout += heldout
        stats.records += not heldout
        yield heldout, pair


def check_preference_source(data, where: str) -> None:
    """Raise UserError before any output when the pairs cannot be read as the recipe says."""
    from smolrecipe.data.sources import first_stage_record

    first = first_stage_record(data, where, "records with prompt/chosen/rejected (the tiny recipe's: tools/make_demo_corpus.py)")
    for name in ("prompt_field", "chosen_field", "rejected_field"):
        column = getattr(data, name)
        needed = name != "prompt_field" or isinstance(first.get(data.chosen_field), str)  # message lists carry the prompt
        if needed and column not in first:
            raise UserError(f"{where}.{name}", f"field '{column}' is not in the records", f"use one of {sorted(first)}")


def write_preference_dataset(records: Iterable[dict], data, tokenizer, max_tokens: int, out: Path,
                             extra_manifest: dict[str, Any] | None = None, progress: bool = True,
                             where: str = "data") -> dict[str, Any]:
    """Convert and write train.parquet + heldout.parquet + manifest.json under `out`, all or nothing."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm import tqdm

    stats = PairStats()
    schema = pa.schema([(c, pa.string()) for c in COLUMNS])
    with staged_folder(out) as staging:
        batches: dict[bool, list[dict]] = {False: [], True: []}
        with pq.ParquetWriter(staging / TRAIN_FILE, schema) as train, pq.ParquetWriter(staging / HELDOUT_FILE, schema) as held:
            writers = {False: train, True: held}
            for heldout, pair in convert(tqdm(records, desc="preference: pairs", unit=" pair", disable=not progress),
                                         data, tokenizer, max_tokens, stats):
                batches[heldout].append(pair)
                if len(batches[heldout]) >= WRITE_BATCH:
                    writers[heldout].write_table(pa.Table.from_pylist(batches[heldout], schema))
                    batches[heldout] = []
            for heldout, rows in batches.items():
                if rows:
                    writers[heldout].write_table(pa.Table.from_pylist(rows, schema))
        if stats.records == 0:
            raise UserError(where, f"no usable training pair among {stats.read:,} records "
                            f"(dropped: {dict(stats.dropped)}, held out: {stats.heldout:,})",
                            "check the pair fields, heldout_fraction and max_length")
        manifest = {**(extra_manifest or {}), **stats.as_dict(), "max_tokens": max_tokens,
                    "file": TRAIN_FILE, "heldout_file": HELDOUT_FILE}
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_pairs(folder: str | Path, split: str = "train"):
    """A prepared split as a `datasets.Dataset` with the COLUMNS."""
    from datasets import load_dataset

    path = Path(folder) / (TRAIN_FILE if split == "train" else HELDOUT_FILE)
    if not path.is_file():
        raise UserError(str(folder), f"has no {path.name}", "prepare it: python tools/prepare_data.py RECIPE --stage NAME")
    return load_dataset("parquet", data_files=str(path), split="train")
