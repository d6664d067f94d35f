"""The token budget's cost: the same corpus prepared capped and uncapped, side by side.

    python bench/prepare_data.py                 # ~25 MB of demo corpus, 2 workers
    python bench/prepare_data.py --scale 20 --workers 1 --out runs/bench/prepare_data.json

(a) uncapped: tools/prepare_data.py --no-budget reads the tiny recipe's four pretraining sources to
    their ends (filters and dedup off, so only the read -> tokenize -> write path is timed);
(b) capped: the same sources with `max_tokens` at CAPPED_SHARE of what (a) kept, so the cap is
    active (its exact count of a sample, its estimate after) and the work is nearly the same;
each arm --repeats times, interleaved, the fastest run of each compared.

The cap must cost under 5%: ratio = tokens/s capped / tokens/s uncapped >= 0.95. (a)'s tokens/s per
worker, with as many workers as cores, is the per-core rate the data plan uses
(smolrecipe.data.data_plan.TOKENS_PER_CORE_SECOND).
"""

from __future__ import annotations

import sys  # noqa: I001 (must run first)

# bench/ holds tokenize.py, named like the standard-library module transformers imports: take the
# script's folder off the import path before anything imports `tokenize`.
if sys.path and sys.path[0] == __import__("os").path.dirname(__import__("os").path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import os
import platform
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
sys.path.append(str(ROOT / "bench"))  # last: its tokenize.py must not hide the standard library's

from demo_pipeline import SOURCES, bench_recipe, prepare, write_corpus  # noqa: E402

CAPPED_SHARE = 0.9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=10.0, help="demo corpus scale (10 = ~25 MB of pretraining text)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each arm, interleaved; the fastest counts")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "prepare_data.json")
    args = parser.parse_args(argv)

    from smolrecipe.atomic import write_json
    from smolrecipe.data.tokenizer import build_tokenizer
    from smolrecipe.recipe.loading import load_recipe

    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp:
        work = Path(tmp)
        megabytes = write_corpus(work, args.scale, args.workers)
        build_tokenizer(load_recipe(bench_recipe(work, "uncapped")))  # outside both timings
        # Interleaved repeats, the fastest of each arm: a run takes seconds, and whatever else the
        # machine does moves single timings by more than the effect measured.
        whole_times, capped_times = [], []
        for i in range(args.repeats):
            seconds, whole = prepare(bench_recipe(work, f"uncapped{i}"), args.workers, "--no-budget")
            whole_times.append(seconds)
            budgets = {s: int(whole[s] * CAPPED_SHARE) for s in SOURCES}
            seconds, capped = prepare(bench_recipe(work, f"capped{i}", budgets), args.workers)
            capped_times.append(seconds)
        whole_s, capped_s = min(whole_times), min(capped_times)

    whole_rate, capped_rate = sum(whole.values()) / whole_s, sum(capped.values()) / capped_s
    ratio = capped_rate / whole_rate
    worst = max(abs(capped[s] - budgets[s]) / budgets[s] for s in SOURCES)
    print(f"{'':<28}{'seconds':>10}{'tokens':>14}{'tokens/s':>12}{'per worker':>12}")
    for name, s, t in (("uncapped (--no-budget)", whole_s, whole), (f"capped at {CAPPED_SHARE:.0%}", capped_s, capped)):
        total = sum(t.values())
        print(f"{name:<28}{s:>10.2f}{total:>14,}{total / s:>12,.0f}{total / s / args.workers:>12,.0f}")
    print(f"ratio capped / uncapped tokens/s: {ratio:.3f} (goal >= 0.95); kept tokens within {worst:.2%} of each budget; "
          f"{megabytes:.1f} MB of text, {args.workers} worker(s), {os.cpu_count()} cores, best of {args.repeats}")
    write_json(args.out, {
        "text_megabytes": round(megabytes, 2), "workers": args.workers, "cores": os.cpu_count(),
        "repeats": args.repeats, "uncapped_runs_seconds": [round(t, 3) for t in whole_times],
        "capped_runs_seconds": [round(t, 3) for t in capped_times],
        "uncapped_seconds": round(whole_s, 3), "uncapped_tokens": sum(whole.values()),
        "capped_seconds": round(capped_s, 3), "capped_tokens": sum(capped.values()), "budgets": budgets,
        "uncapped_tokens_per_s_per_worker": round(whole_rate / args.workers), "ratio": round(ratio, 4),
        "worst_budget_error": round(worst, 5), "machine": platform.platform(), "python": platform.python_version(),
    })
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
