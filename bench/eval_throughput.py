"""Evaluation throughput: PIQA items/s through lighteval, batched vs one item at a time, same model and items.

    python bench/eval_throughput.py                       # SmolLM2-135M-Instruct, 64 PIQA items, batch 16 vs 1
    python bench/eval_throughput.py --items 200 --batch-size 32 --repeats 3 --out runs/bench/eval_throughput.json

Runs smolrecipe.eval.runner.run_suite (tier 3, mc:piqa) on the packaged SmolLM2-135M-Instruct with the
local PIQA copy (eval/suites.yaml local_copies, or --piqa DIR), alternating the two batch sizes
(1, N, 1, N, ...) so both see the same machine state; each reports its median items/s. Both must
give the same accuracy (checked: batching changes padding, not scores). Prints a table, writes JSON.
"""

from __future__ import annotations

import sys  # noqa: I001 (must run first)

# bench/ holds tokenize.py, named like a standard-library module that transformers imports:
# take this script's folder off the import path before anything imports `tokenize`.
if sys.path and sys.path[0] == __import__("os").path.dirname(__import__("os").path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import platform
import statistics
import tempfile
from pathlib import Path

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--piqa", help="local PIQA copy (default: from eval/suites.yaml local_copies)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/eval_throughput.json"))
    args = parser.parse_args(argv)

    import torch
    from rich.console import Console
    from rich.table import Table

    from smolrecipe.atomic import write_json
    from smolrecipe.eval.packaged_model import save_as_hf_folder
    from smolrecipe.eval.runner import local_copies, run_suite
    from smolrecipe.recipe.suites import load_suites

    suites, raw = load_suites()
    piqa = args.piqa or local_copies(raw.get("local_copies", [])).get("piqa")
    if piqa is None:
        print("error: no local PIQA copy; fix: pass --piqa DIR or set SMOLRECIPE_BENCHMARKS", file=sys.stderr)
        return 2
    runs: dict[int, list[dict]] = {1: [], args.batch_size: []}
    with tempfile.TemporaryDirectory(prefix="smolrecipe-bench-") as tmp:
        hf = save_as_hf_folder(MODEL, Path(tmp) / "hf")
        for _ in range(args.repeats):
            for batch in runs:
                result = run_suite(hf, {}, suites["tier3"], raw, Path(tmp) / f"out-{batch}", tasks=["mc:piqa"], limit=args.items,
                                   local={"piqa": str(piqa)}, batch_size=batch)
                runs[batch].append(result.data)
    accs = {batch: {d["tasks"]["mc:piqa"]["acc"] for d in data} for batch, data in runs.items()}
    if len(set().union(*accs.values())) != 1:
        print(f"error: batch sizes disagree on accuracy {accs}", file=sys.stderr)
        return 1
    speed = {batch: statistics.median(d["items_per_s"] for d in data) for batch, data in runs.items()}
    table = Table(title=f"PIQA through lighteval: {MODEL}, {args.items} items, {torch.get_num_threads()} threads")
    for col in ("batch size", "items/s (median)", "runs", "acc"):
        table.add_column(col, justify="right")
    for batch, data in runs.items():
        table.add_row(str(batch), f"{speed[batch]:.2f}", str(len(data)), f"{data[0]['tasks']['mc:piqa']['acc']:.3f}")
    Console().print(table)
    ratio = speed[args.batch_size] / speed[1]
    result = {"model": MODEL, "items": args.items, "repeats": args.repeats, "threads": torch.get_num_threads(),
              "device": "cuda" if torch.cuda.is_available() else "cpu", "machine": platform.machine(),
              "items_per_s": {str(k): v for k, v in speed.items()}, "batched_over_single": ratio,
              "acc": runs[1][0]["tasks"]["mc:piqa"]["acc"]}
    write_json(args.out, result)
    print(f"eval throughput: batch {args.batch_size} {speed[args.batch_size]:.2f} items/s vs batch 1 {speed[1]:.2f} items/s "
          f"= {ratio:.2f}x on {args.items} PIQA items -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
