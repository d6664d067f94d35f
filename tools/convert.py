"""nanotron checkpoint <-> Hugging Face transformers LLaMA folder.

    python tools/convert.py nanotron-to-hf $RUNS/tiny/stage1/checkpoints/192 runs/hf/tiny-stage1
    python tools/convert.py nanotron-to-hf CKPT_DIR OUT_DIR --tokenizer runs/data/tokenizers/tiny --dtype bfloat16
    python tools/convert.py hf-to-nanotron HF_DIR OUT_DIR       # e.g. a released model as model.init_method.path

CKPT_DIR is one step folder of a nanotron run (<checkpoints_path>/<step>/; the checkpoints folder itself
means its latest step). The HF folder gets the weights, config.json, the tokenizer with its chat
template, a generation config that stops at the tokenizer's end-of-turn token, and a README model
card (recipe, stage, step, tokens seen). Only tp=1, pp=1 checkpoints are converted. Every input file
is checked before anything is written, and OUT_DIR appears complete or not at all.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runs from a checkout without install

from smolrecipe import cli  # noqa: E402


@cli.command(cli.interrupted("run the same command again"))
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{nanotron-to-hf,hf-to-nanotron}")
    to_hf = commands.add_parser("nanotron-to-hf", help="a nanotron checkpoint step folder -> a transformers folder")
    to_hf.add_argument("checkpoint", type=Path, help="nanotron checkpoint step folder, <checkpoints_path>/<step>/")
    to_hf.add_argument("out", type=Path, help="output folder (replaced if it exists)")
    to_hf.add_argument("--tokenizer", help="tokenizer folder or hub id (default: tokenizer.tokenizer_name_or_path in the "
                                           "checkpoint's config.yaml)")
    to_hf.add_argument("--dtype", choices=["float32", "bfloat16"], help="weights dtype (default: as stored in the checkpoint)")
    to_nt = commands.add_parser("hf-to-nanotron", help="a transformers LLaMA folder -> a nanotron checkpoint folder (tp=1, pp=1)")
    to_nt.add_argument("hf_dir", type=Path, help="transformers LLaMA folder (config.json + *.safetensors)")
    to_nt.add_argument("out", type=Path, help="output folder (replaced if it exists)")
    args = parser.parse_args(argv)

    from smolrecipe.backends.nanotron import convert  # torch/transformers load only once the arguments parse

    start = time.perf_counter()
    if args.command == "nanotron-to-hf":
        out = convert.nanotron_to_hf(args.checkpoint, args.out, tokenizer=args.tokenizer, dtype=args.dtype, progress=True)
        p = convert.checkpoint_provenance(convert.resolve_checkpoint(args.checkpoint))
        known = [f"{key} {p[key]}" for key in ("recipe", "stage", "step") if p[key] is not None]
        known += [f"{p['tokens_seen']:,} tokens"] if p["tokens_seen"] is not None else []
        source = f"{args.checkpoint} ({', '.join(known) or 'no provenance recorded'})"
    else:
        out = convert.hf_to_nanotron(args.hf_dir, args.out, progress=True)
        source = str(args.hf_dir)
    s = convert.weights_summary(out)
    print(f"{args.command}: {s['parameters']:,} parameters in {s['tensors']} tensors ({'/'.join(s['dtypes'])}) "
          f"from {source} -> {out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
