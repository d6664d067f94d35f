"""What the data benchmarks share: the demo corpus, and the tiny recipe pointed at it with filters
and dedup off, so that only the read -> tokenize -> write path is timed."""

from __future__ import annotations

import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("prose", "forum", "arithmetic", "python_functions")


def write_corpus(work: Path, scale: float, workers: int) -> float:
    """The demo corpus under work/corpus; returns the megabytes of pretraining text."""
    from demo.corpus import write_demo_corpus

    counts = write_demo_corpus(work / "corpus", seed=0, scale=scale, shards=max(2, workers))
    return sum(counts[s]["characters"] for s in SOURCES) / 1e6


def bench_recipe(work: Path, name: str, budgets: dict[str, int] | None = None) -> Path:
    """work/<name>.yaml: the tiny recipe reading work/corpus into work/<name>, with the tokenizer
    folder at work/tokenizer; `budgets` set each source's max_tokens."""
    recipe = yaml.safe_load((ROOT / "recipes" / "tiny.yaml").read_text())
    recipe["paths"] = {"data": str(work / name), "runs": str(work / "runs")}
    recipe["tokenizer"]["path"] = str(work / "tokenizer")
    if budgets:
        recipe["max_epochs"] = 1000  # budgets set by hand, far above what the stages draw
    for source_name, source in recipe["sources"].items():
        source.update(path=str(work / "corpus" / source_name), dedup=False, filters=[])
        if budgets:
            source["max_tokens"] = budgets[source_name]
    for stage in recipe["stages"]:
        if "data" in stage:  # a stage with its own dataset (SFT chats)
            stage["data"]["path"] = str(work / "corpus" / "chats")
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def prepare(recipe: Path, workers: int, *extra: str) -> tuple[float, dict[str, int]]:
    """tools/prepare_data.py on the recipe: (seconds, tokens per source)."""
    import prepare_data

    from smolrecipe.data.pipeline import read_manifest

    start = time.perf_counter()
    assert prepare_data.main([str(recipe), "--workers", str(workers), *extra]) == 0
    seconds = time.perf_counter() - start
    data = Path(yaml.safe_load(recipe.read_text())["paths"]["data"]) / "tiny"
    return seconds, {s: read_manifest(data / s)["tokens"] for s in SOURCES}
