"""Needle-in-a-haystack retrieval (`needle:<name>` tasks): exact match on the needle over a grid of
context lengths x depths.

The items are smolrecipe.data.needles' (needle_grid): haystacks of sentences from a local folder of
plain text (eval/suites.yaml's `needles.<name>.haystack`), a needle at each depth, the question and
the answer prefix at the end, exactly `length` tokens of the checkpoint's own tokenizer, the same
for the same seed. Each item is answered greedily from its token ids (plain text, no chat template,
as the ppl: slices; chat models too); the first run of digits in the continuation must equal the
needle's value. lighteval has no such task: this module scores it, as smolrecipe.eval.perplexity
scores the slices.

A needle:<name> task's results (smolrecipe.eval.runner writes them under `tasks`):

  acc            share of all items answered exactly
  n              items (lengths x depths x per_cell)
  grid           {length: {depth: acc}}, JSON keys as strings ("1024", "0.25")
  per_length     {length: acc}
  lengths, depths, per_cell, digits, seed
  context        the model's max_position_embeddings: cells beyond it test extrapolation
  examples       per length, the first right and the first wrong answer: length, depth, value,
                 generated (the decoded continuation), correct, prompt_tail

Every answer also goes to <suite>.answers.jsonl beside the results, as the generated answers of the
lighteval tasks do.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Sequence

from smolrecipe.data.needles import NeedleItem, needle_grid
from smolrecipe.errors import UserError

DIGITS = re.compile(r"\d+")
EXTRA_TOKENS = 2  # generated beyond the digits: the space before the value, and one to spare
HAYSTACK_FACTOR = 4  # tokens of text read for the filler, per token of the longest haystack
TAIL_CHARS = 160  # of the prompt, kept with an answer

Generate = Callable[[list[list[int]]], list[str]]  # prompts of equal length -> their decoded continuations


def first_digits(text: str) -> str | None:
    """The first run of digits in `text`: a model's answer to the needle question."""
    found = DIGITS.search(text)
    return found.group() if found else None


def depth_key(depth: float) -> str:
    return str(float(depth))


# --- the haystack -------------------------------------------------------------------------------


def haystack_texts(name: str, path: Path, text_field: str, tokenizer, tokens: int) -> list[str]:
    """The first documents of the local haystack file or folder, `tokens` tokens in all (read as the
    ppl: slices read theirs)."""
    from smolrecipe.eval.tasks import Slice, slice_texts

    if not path.exists():
        raise UserError(f"needles.{name}.haystack", f"{path} does not exist",
                        "make demo writes the demo's held-out text (tools/make_demo_corpus.py --out runs/data/heldout --seed 1 "
                        "--scale 0.05); otherwise point it at a local JSONL or text file or folder of held-out text")
    try:
        return slice_texts(Slice(name, str(path), text_field=text_field), tokenizer, tokens)
    except UserError as err:
        part = "text_field" if err.field.endswith("text_field") else "haystack"
        raise UserError(f"needles.{name}.{part}", err.problem, err.fix) from None


def grid_items(name: str, spec, path: Path, tokenizer, limit: int | None = None) -> list[NeedleItem]:
    """The items of needle:<name> (`spec`: a NeedleSpec of eval/suites.yaml). `limit` caps the items
    in all: per_cell becomes limit // cells (at least 1)."""
    cells = len(spec.lengths) * len(spec.depths)
    per_cell = spec.per_cell if limit is None else max(1, min(spec.per_cell, limit // cells))
    texts = haystack_texts(name, path, spec.text_field, tokenizer, HAYSTACK_FACTOR * max(spec.lengths))
    return needle_grid(tokenizer, texts, spec.lengths, spec.depths, per_cell, seed=spec.seed, digits=spec.digits,
                       where=f"needles.{name}")


# --- answering ----------------------------------------------------------------------------------


def model_generate(model, tokenizer, max_new_tokens: int) -> Generate:
    """Greedy continuations from a transformers causal LM. The prompts of a batch have one length
    (a grid cell's items are all `length` tokens), so nothing is padded."""
    import torch

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    @torch.no_grad()
    def generate(prompts: list[list[int]]) -> list[str]:
        ids = torch.tensor(prompts, device=device)
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, num_beams=1, pad_token_id=pad, use_cache=True)  # local checkpoints say use_cache: false
        return [tokenizer.decode(row[ids.shape[1]:], skip_special_tokens=True) for row in out.tolist()]

    return generate


def answer_items(items: Sequence[NeedleItem], generate: Generate, batch_size: int = 8) -> list[str]:
    """Each item's continuation, in item order, generated in batches of items of one length."""
    answers: list[str | None] = [None] * len(items)
    by_length: dict[int, list[int]] = {}
    for i, item in enumerate(items):
        by_length.setdefault(len(item.input_ids), []).append(i)
    for indices in by_length.values():
        for start in range(0, len(indices), batch_size):
            batch = indices[start:start + batch_size]
            for i, text in zip(batch, generate([items[i].input_ids for i in batch]), strict=True):
                answers[i] = text
    return [a or "" for a in answers]


# --- scoring ------------------------------------------------------------------------------------


def _rate(hits: list[bool]) -> float:
    return sum(hits) / len(hits)


def needle_metrics(items: Sequence[NeedleItem], answers: Sequence[str]) -> dict[str, Any]:
    """acc, n, the grid, per_length and examples of the answers to `items` (see the module's docstring)."""
    hits = [first_digits(a) == item.value for item, a in zip(items, answers, strict=True)]
    cells: dict[str, dict[str, list[bool]]] = {}
    examples: dict[tuple[int, bool], dict[str, Any]] = {}
    for item, answer, hit in zip(items, answers, hits, strict=True):
        cells.setdefault(str(item.length), {}).setdefault(depth_key(item.depth), []).append(hit)
        examples.setdefault((item.length, hit), {
            "length": item.length, "depth": item.depth, "value": item.value, "generated": answer, "correct": hit,
            "prompt_tail": item.prompt[-TAIL_CHARS:]})
    return {
        "acc": _rate(hits), "n": len(items),
        "grid": {length: {depth: _rate(h) for depth, h in row.items()} for length, row in cells.items()},
        "per_length": {length: _rate([h for row in cells[length].values() for h in row]) for length in cells},
        "examples": [examples[key] for key in sorted(examples, key=lambda k: (k[0], not k[1]))],
    }


def answer_records(task: str, items: Sequence[NeedleItem], answers: Sequence[str]) -> list[dict[str, Any]]:
    """One record per answer for <suite>.answers.jsonl: the prompt's tail only (a haystack is long)."""
    return [{"task": task, "id": f"{item.length}-{depth_key(item.depth)}-{i}", "prompt": item.prompt[-TAIL_CHARS:],
             "answer": answer, "expected": item.value, "scores": {"exact_match": float(first_digits(answer) == item.value)},
             "length": item.length, "depth": item.depth, "depth_actual": item.depth_actual}
            for i, (item, answer) in enumerate(zip(items, answers, strict=True))]


def score_needles(task: str, spec, items: Sequence[NeedleItem], generate: Generate, batch_size: int = 8,
                  context: int | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the task's results, its answer records) for `items` answered by `generate`."""
    answers = answer_items(items, generate, batch_size)
    per_cell = len(items) // (len(spec.lengths) * len(spec.depths))
    metrics = needle_metrics(items, answers) | {
        "lengths": list(spec.lengths), "depths": [float(d) for d in spec.depths], "per_cell": per_cell, "digits": spec.digits,
        "seed": spec.seed, "context": context}
    return metrics, answer_records(task, items, answers)
