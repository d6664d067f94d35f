"""The data plan: before any work, what preparing each source will take.

Per source: the tokens each stage draws and the budget (recipe.budgets), the datatrove tasks it
gets, and estimates of what reading the budget means: documents, gigabytes and CPU-hours.

The estimates come from the best numbers available here, and the plan says which:
  - "sample": the first SAMPLE_DOCUMENTS records of the source, read now (a local path always; a
    hub set when the hub is reachable and the tokenizer folder exists), rendered and filtered as
    the pipeline does and tokenized with the recipe's tokenizer: bytes per token, tokens per
    document, and the share of documents the source's filters keep;
  - "card": the dataset card's own figures (`card:` in the recipe: documents, tokens, bytes as
    stored), when nothing can be read (offline, or before logging in). The card counts tokens
    with its own tokenizer and bytes compressed; the plan says so;
  - "none": neither; only the token columns are filled.

CPU-hours use TOKENS_PER_CORE_SECOND, this pipeline's throughput per core (read JSONL, tokenize,
shuffle, write), measured by bench/prepare_data.py; a source whose filters keep a fraction f of
its documents reads 1/f as much.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from smolrecipe.data.pipeline import document_end_token, document_tokenizer
from smolrecipe.data.sources import build_filters, build_reader, hub_shards, local_files, matching_files
from smolrecipe.recipe.budgets import source_budgets
from smolrecipe.recipe.plan import RunPlan
from smolrecipe.recipe.schema import Recipe, Source

SAMPLE_DOCUMENTS = 200
# Measured by bench/prepare_data.py (24-49 MB of the demo corpus, SmolLM2's tokenizer, local JSONL):
# 1.23-1.52M tokens/s with 2 workers on this project's 2-core CI machine, capped or not, i.e.
# 615-760k per core; rounded down. Streaming from the hub adds network and decompression time and LLaMA-3's
# 128k vocabulary tokenizes somewhat slower, so treat the CPU-hours as a lower bound.
TOKENS_PER_CORE_SECOND = 600_000
# A datatrove task is the unit a requeued job resumes from: about this many tokens keeps a task to
# minutes at the rate above, so a preempted job loses little, without thousands of tiny tasks.
TOKENS_PER_TASK = 50_000_000


@dataclass(frozen=True)
class SampleStats:
    basis: str  # sample | card | none
    bytes_per_token: Optional[float] = None
    tokens_per_document: Optional[float] = None
    kept_fraction: float = 1.0  # documents the source's filters keep (sample only; 1 otherwise)
    note: str = ""


@dataclass(frozen=True)
class SourcePlan:
    source: str
    origin: str  # hub id or local path
    tokens_needed: dict[str, int] = field(default_factory=dict)  # by stage
    tokens_drawn: int = 0
    tokens_budget: int = 0
    budget_basis: str = "plan"
    epochs: float = 0.0
    tasks: int = 1
    estimate_basis: str = "none"
    documents: Optional[int] = None  # documents read to reach the budget
    gigabytes: Optional[float] = None  # text read (sample: UTF-8 text; card: files as stored)
    cpu_hours: Optional[float] = None
    note: str = ""

    def as_json(self) -> dict:
        return asdict(self)


def default_tasks(source: Source, budget: int | None, shards: int | None = None) -> int:
    """Tasks for a budget: one per TOKENS_PER_TASK, no more than the files datatrove hands out
    (a local source's files; a hub set's shards when known). Without a budget: one per file."""
    files = max(1, len(matching_files(source.path))) if source.path is not None else shards
    if budget is None:
        return files or 1
    tasks = max(1, math.ceil(budget / TOKENS_PER_TASK))
    return min(tasks, files) if files else tasks


def sample_stats(recipe: Recipe, source: Source, tokenizer=None) -> SampleStats:
    """Measured on the source's first records when they and a tokenizer are at hand, else the card."""
    if tokenizer is not None:
        try:
            return _measure(source, tokenizer)
        except Exception as exc:  # offline, gated, unreadable: fall back, and say why
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}" if str(exc) else type(exc).__name__
            return _from_card(source, note=f"no sample ({reason})")
    return _from_card(source, note="no sample (tokenizer folder not built yet)")


def _from_card(source: Source, note: str) -> SampleStats:
    card = source.card
    if card is None:
        return SampleStats("none", note=note)
    per_token = card.bytes / card.tokens if card.bytes and card.tokens else None
    per_document = card.tokens / card.documents if card.tokens and card.documents else None
    counted = f"{card.tokenizer} tokens" if card.tokens else "no tokens"
    return SampleStats("card", bytes_per_token=per_token, tokens_per_document=per_document,
                       note=f"{note}; the card counts {counted}" + (f" ({card.where})" if card.where else ""))


def _measure(source: Source, tokenizer) -> SampleStats:
    """The first records through the pipeline's own reader and filters, counted by the tokenizer the
    pipeline uses (document-end token included)."""
    documents = list(build_reader(source, limit=SAMPLE_DOCUMENTS).run(None, rank=0, world_size=1))
    kept = iter(documents)
    for step in build_filters(source, tokenizer):
        kept = step.run(kept, rank=0, world_size=1)
    texts = [doc.text for doc in kept]
    if not texts:
        return SampleStats("sample", note=f"none of the first {len(documents)} records is kept by the filters")
    tokens = sum(len(e.ids) for e in tokenizer.encode_batch(texts))
    size = sum(len(t.encode("utf-8")) for t in texts)
    return SampleStats("sample", bytes_per_token=size / tokens, tokens_per_document=tokens / len(texts),
                       kept_fraction=len(texts) / len(documents), note=f"first {len(documents)} records")


def source_plan(recipe: Recipe, name: str, budget, stats: SampleStats, shards: int | None) -> SourcePlan:
    source = recipe.sources[name]
    documents = gigabytes = cpu_hours = None
    if stats.tokens_per_document:
        documents = math.ceil(budget.budget / stats.tokens_per_document / stats.kept_fraction)
    if stats.bytes_per_token:
        gigabytes = budget.budget * stats.bytes_per_token / stats.kept_fraction / 1e9
    if budget.budget:
        cpu_hours = budget.budget / stats.kept_fraction / TOKENS_PER_CORE_SECOND / 3600
    return SourcePlan(
        source=name, origin=source.hf or str(source.path), tokens_needed=dict(budget.drawn_by_stage), tokens_drawn=budget.drawn,
        tokens_budget=budget.budget, budget_basis=budget.basis, epochs=round(budget.epochs, 3),
        tasks=source.tasks or default_tasks(source, budget.budget, shards), estimate_basis=stats.basis, documents=documents,
        gigabytes=None if gigabytes is None else round(gigabytes, 3),
        cpu_hours=None if cpu_hours is None else round(cpu_hours, 4), note=stats.note,
    )


def data_plan(plan: RunPlan, names: list[str] | None = None, sample: bool = True,
              progress=lambda line: None) -> list[SourcePlan]:
    """The plan of every source (or of `names`) of a resolved recipe's run plan."""
    recipe = plan.recipe
    budgets = source_budgets(plan)
    tokenizer = _tokenizer(recipe) if sample else None
    out = []
    for name in names or list(recipe.sources):
        start = time.time()
        source = recipe.sources[name]
        readable = source.path is None or Path(local_files(source.path)[0]).exists()
        stats = sample_stats(recipe, source, tokenizer if readable else None) if sample else _from_card(source, "not sampled")
        shards = hub_shards(source) if sample and source.hf is not None and stats.basis == "sample" else None
        shards = shards or (source.card.files if source.card else None)
        out.append(source_plan(recipe, name, budgets[name], stats, shards))
        progress(f"{name}: {stats.basis} ({time.time() - start:.1f}s)")
    return out


def _tokenizer(recipe: Recipe):
    """The pipeline's document tokenizer, when the recipe's tokenizer folder is built."""
    folder = recipe.tokenizer.path
    if not (Path(folder) / "tokenizer.json").is_file():
        return None
    from tokenizers import Tokenizer

    document_end = document_end_token(recipe, Tokenizer.from_file(str(Path(folder) / "tokenizer.json")))
    return document_tokenizer(folder, document_end)
