"""Write the demo corpus the tiny recipe reads: web-like prose, forum threads, arithmetic word
problems, small Python functions, short chats and preference pairs, generated offline from a fixed seed.

    python tools/make_demo_corpus.py                       # -> $SMOLRECIPE_DATA/corpus (default runs/data/corpus)
    python tools/make_demo_corpus.py --out /tmp/c --scale 4 --seed 1

A corpus already there with the same seed, scale and shard count is left as it is.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from demo.corpus import write_demo_corpus
from smolrecipe import cli
from smolrecipe.errors import UserError
from smolrecipe.recipe.envpaths import project_path


@cli.command(cli.interrupted("run the same command again"))
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # where the tiny recipe reads it, ${SMOLRECIPE_DATA:-runs/data}/corpus, relative to the checkout as recipe paths are
    default = Path(project_path(os.environ.get("SMOLRECIPE_DATA") or "runs/data")) / "corpus"
    parser.add_argument("--out", type=Path, default=default, help=f"output folder (default: {default})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the number of documents of every source")
    parser.add_argument("--shards", type=int, default=2, help="JSONL files per source (datatrove runs one task per file)")
    args = parser.parse_args(argv)
    if not args.scale > 0 or args.scale == float("inf") or args.shards < 1:
        parser.error("--scale must be > 0 and --shards >= 1")
    start = time.time()
    try:
        counts = write_demo_corpus(args.out, seed=args.seed, scale=args.scale, shards=args.shards)
    except FileExistsError as err:  # a folder the generator did not write: never replaced
        raise UserError("--out", f"{args.out} exists, is not empty and holds no demo corpus", "choose another folder or remove it") from err
    for source, c in counts.items():
        print(f"  {source:<17} {c['documents']:>7,} documents {c['characters']:>12,} characters in {c['files']} file(s)")
    total = sum(c["characters"] for c in counts.values())
    print(f"demo corpus: {len(counts)} sources, {sum(c['documents'] for c in counts.values()):,} documents, "
          f"{total / 1e6:.1f}M characters at {args.out} (seed {args.seed}, scale {args.scale:g}) in {time.time() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
