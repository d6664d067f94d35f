"""Held-out preference pairs (`pairs:<name>` tasks): the pair file, and how a pair is scored.

The file is what a preference stage's data preparation holds out (smolrecipe.data.preferences writes
<paths.data>/<recipe>/<stage>/heldout.parquet), or any Parquet or JSONL file with these columns
(others are ignored):

  prompt     the conversation so far, rendered with the model's chat template, ending in the
             generation prompt ("<|im_start|>assistant\\n")
  chosen     the preferred answer as the template renders it, without the end-of-turn token
  rejected   the other answer, the same way

A pair is scored by the model's own log-likelihood of each answer followed by the tokenizer's eos
token (what the preference trainers append), given the prompt exactly as written: it is already
chat-rendered, so nothing wraps it again (smolrecipe.eval.tasks runs it through lighteval):

  pair_acc        1 when log p(chosen + eos | prompt) > log p(rejected + eos | prompt), summed
                  over the answer's tokens (DPO's implicit reward compares these sums); a tie is 0
  pair_acc_norm   the same with each answer's mean log-probability per token: a model that merely
                  prefers the shorter answer does not score here
  margin          log p(chosen + eos | prompt) - log p(rejected + eos | prompt), in nats

Nothing here imports lighteval or torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smolrecipe.errors import UserError

COLUMNS = ("prompt", "chosen", "rejected")
METRICS = ("pair_acc", "pair_acc_norm", "margin")
PREPARE = ("prepare it with python tools/prepare_data.py RECIPE --stage-data (a preference stage with heldout_fraction > 0 writes "
           "heldout.parquet), or point pairs.<name>.source in eval/suites.yaml at a Parquet or JSONL file of "
           f"{', '.join(COLUMNS)}")


@dataclass(frozen=True)
class Pair:
    prompt: str
    chosen: str
    rejected: str


# --- the pair file -------------------------------------------------------------------------------


Rows = list[tuple[str, dict[str, Any]]]  # (where in the file, the row)


def _parquet_rows(path: Path) -> tuple[list[str], Rows]:
    """(the file's columns, its rows with only COLUMNS) of a Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        columns = pq.read_schema(path).names
        if any(c not in columns for c in COLUMNS):
            return columns, []
        rows = pq.read_table(path, columns=list(COLUMNS)).to_pylist()
    except (pa.ArrowInvalid, OSError) as err:
        raise UserError(str(path), f"is not a readable Parquet file ({str(err).splitlines()[0][:200]})", PREPARE) from None
    return columns, [(f"row {i}", row) for i, row in enumerate(rows, start=1)]


def _jsonl_rows(path: Path) -> tuple[list[str], Rows]:
    """(the first object's fields, every object) of a JSONL file."""
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(str(path), "is not UTF-8 text", "write the pairs as UTF-8 JSONL") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path} line {number}", f"is not JSON ({err.msg})", "write one JSON object per line") from None
        if not isinstance(row, dict):
            raise UserError(f"{path} line {number}", f"is a JSON {type(row).__name__}", "write one JSON object per line")
        rows.append((f"line {number}", row))
    return (list(rows[0][1]) if rows else list(COLUMNS)), rows


def _pair(row: dict[str, Any], where: str) -> Pair:
    for column in COLUMNS:
        if column not in row:
            raise UserError(f"{where}, {column}", "is missing", f"every pair has {', '.join(COLUMNS)}")
        if not isinstance(row[column], str):
            raise UserError(f"{where}, {column}", f"is {row[column]!r}, not text", "give prompt, chosen and rejected as strings")
    if not row["prompt"].strip():
        raise UserError(f"{where}, prompt", "is empty", "give the chat-rendered conversation up to the generation prompt")
    return Pair(row["prompt"], row["chosen"], row["rejected"])


def load_pairs(path: Path) -> list[Pair]:
    """The pairs of a .parquet or .jsonl file, checked: a problem raises a one-line UserError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(str(path), "no such pair file" if not path.exists() else "is not a file", PREPARE)
    if path.suffix not in (".parquet", ".jsonl"):
        raise UserError(str(path), f"is a {path.suffix or 'suffix-less'} file", "give a .parquet or .jsonl file of pairs")
    columns, rows = (_parquet_rows if path.suffix == ".parquet" else _jsonl_rows)(path)
    if missing := [c for c in COLUMNS if c not in columns]:
        raise UserError(str(path), f"has no {', '.join(missing)} column" + ("s" if len(missing) > 1 else ""),
                        f"every pair needs {', '.join(COLUMNS)} (the chat-rendered prompt and the two answers); {PREPARE}")
    if not rows:
        raise UserError(str(path), "holds no pairs", PREPARE)
    return [_pair(row, f"{path} {where}") for where, row in rows]


def select(pairs: list[Pair], limit: int | None) -> list[Pair]:
    """`limit` pairs spread evenly over the file, in file order (all without a limit). Not the first
    ones: the held-out pairs keep their source's order, which may group them by origin
    (UltraFeedback's prompts come from several datasets). The same file and limit give the same pairs."""
    if limit is None or limit >= len(pairs):
        return list(pairs)
    return [pairs[i * len(pairs) // limit] for i in range(limit)]


# --- scoring -------------------------------------------------------------------------------------


def continuations(pair: Pair, eos: str) -> list[str]:
    """What lighteval scores after the prompt: chosen + eos, rejected + eos and, when the prompt ends
    in whitespace, an empty continuation. lighteval moves a context's trailing whitespace (ChatML's
    newline after the assistant header) to the front of every continuation, so each answer's score
    includes that whitespace's; the empty continuation scores it alone (answer_sides takes it off)."""
    baseline = [""] if pair.prompt != pair.prompt.rstrip() else []
    return [pair.chosen + eos, pair.rejected + eos, *baseline]


@dataclass(frozen=True)
class Side:
    """One answer's score: its summed log-probability (nats) over `tokens` tokens, eos included."""

    logprob: float
    tokens: int

    @property
    def mean(self) -> float:
        return self.logprob / self.tokens


def answer_sides(logprobs: list[float], tokens: list[list[int]]) -> tuple[Side, Side]:
    """(chosen, rejected) from lighteval's summed log-probabilities and token ids of the continuations.

    With a whitespace baseline (a third continuation), its tokens and log-probability are taken off
    both answers when its tokens begin both: then the answers' own tokens are exactly the ones a
    preference trainer scores after the prompt. They always do for a template whose answer starts
    with a character that does not merge with the whitespace (ChatML trims it). Otherwise both
    answers keep the whitespace, which changes their sums alike."""
    chosen, rejected = (Side(float(lp), len(ids)) for lp, ids in zip(logprobs[:2], tokens[:2], strict=True))
    if len(logprobs) > 2:
        space, space_ids = float(logprobs[2]), list(tokens[2])
        if all(list(ids[: len(space_ids)]) == space_ids and len(ids) > len(space_ids) for ids in tokens[:2]):
            chosen, rejected = (Side(s.logprob - space, s.tokens - len(space_ids)) for s in (chosen, rejected))
    return chosen, rejected


def pair_scores(chosen: Side, rejected: Side) -> dict[str, float]:
    """One pair's METRICS."""
    return {"pair_acc": float(chosen.logprob > rejected.logprob), "pair_acc_norm": float(chosen.mean > rejected.mean),
            "margin": chosen.logprob - rejected.logprob}
