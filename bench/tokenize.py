"""Tokenization throughput: our datatrove pipeline vs a bare `tokenizers` batch encode, same text.

    python bench/tokenize.py                 # ~50 MB of demo corpus, 2 workers
    python bench/tokenize.py --scale 2 --workers 1 --out runs/bench/tokenize.json

(a) pipeline: tools/prepare_data.py on the tiny recipe's four pretraining sources (JSONL reader ->
    NanosetTokenizer -> shuffled .ds files -> manifest), filters and dedup off so that only the
    tokenization path is timed, local executor with --workers processes;
(b) bare: the same JSONL texts read into memory, then `Tokenizer.encode_batch` in batches of
    1,000 (the tokenizers library parallelises each batch over every core itself).

Both use the same tokenizer.json and the same document-end token, so they must produce the same
number of tokens (checked). Prints a table and writes JSON; the goal is ratio >= 0.7.
"""

from __future__ import annotations

import sys  # noqa: I001 (must run first)

# This file is named tokenize.py, like a standard-library module that transformers imports:
# take its folder off the import path before anything imports `tokenize`.
if sys.path and sys.path[0] == __import__("os").path.dirname(__import__("os").path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
sys.path.append(str(ROOT / "bench"))  # last: this file's name must not hide the standard library's tokenize

from demo_pipeline import SOURCES, bench_recipe, prepare, write_corpus  # noqa: E402


def run_bare(work: Path) -> tuple[float, int]:
    from tokenizers import Tokenizer
    from tokenizers.processors import TemplateProcessing

    start = time.perf_counter()
    tokenizer = Tokenizer.from_file(str(work / "tokenizer" / "tokenizer.json"))
    tokenizer.post_processor = TemplateProcessing(single="$A <EOS>", special_tokens=[("<EOS>", tokenizer.token_to_id("<|endoftext|>"))])
    tokens = 0
    for source in SOURCES:
        for path in sorted((work / "corpus" / source).glob("*.jsonl")):
            texts = [json.loads(line)["text"] for line in path.open()]
            for i in range(0, len(texts), 1000):
                tokens += sum(len(e.ids) for e in tokenizer.encode_batch(texts[i:i + 1000]))
    return time.perf_counter() - start, tokens


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=20.0, help="demo corpus scale (20 = ~50 MB of pretraining text)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "tokenize.json")
    args = parser.parse_args(argv)

    from smolrecipe.atomic import write_json
    from smolrecipe.data.tokenizer import build_tokenizer
    from smolrecipe.recipe.loading import load_recipe

    with tempfile.TemporaryDirectory(prefix="bench-tokenize-") as tmp:
        work = Path(tmp)
        megabytes = write_corpus(work, args.scale, args.workers)
        recipe = bench_recipe(work, "data")
        build_tokenizer(load_recipe(recipe))  # outside both timings
        bare_s, bare_tokens = run_bare(work)
        ours_s, per_source = prepare(recipe, args.workers, "--no-budget")
        ours_tokens = sum(per_source.values())

    if ours_tokens != bare_tokens:
        print(f"error: the pipeline wrote {ours_tokens:,} tokens but the bare encoder made {bare_tokens:,}", file=sys.stderr)
        return 1
    rows = [("bare tokenizers encode_batch", bare_s, bare_tokens), (f"smolrecipe pipeline ({args.workers} workers)", ours_s, ours_tokens)]
    ratio = (ours_tokens / ours_s) / (bare_tokens / bare_s)
    print(f"{'':<34}{'seconds':>10}{'tokens':>14}{'tokens/s':>14}")
    for name, s, t in rows:
        print(f"{name:<34}{s:>10.2f}{t:>14,}{t / s:>14,.0f}")
    print(f"ratio pipeline / bare: {ratio:.2f} (goal >= 0.7) on {megabytes:.1f} MB of text, {os.cpu_count()} cores")
    result = {
        "text_megabytes": round(megabytes, 2), "tokens": bare_tokens, "cores": os.cpu_count(), "workers": args.workers,
        "bare_seconds": round(bare_s, 3), "pipeline_seconds": round(ours_s, 3),
        "bare_tokens_per_s": round(bare_tokens / bare_s), "pipeline_tokens_per_s": round(ours_tokens / ours_s),
        "ratio": round(ratio, 3), "machine": platform.platform(), "python": platform.python_version(),
    }
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
