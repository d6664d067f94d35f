"""Training throughput: our local backend (the recipe's Trainer) vs a bare PyTorch loop, same model and data.

    python bench/train_throughput.py                          # tiny recipe on this machine's CPU or GPU
    python bench/train_throughput.py --steps 20 --repeats 3 --out runs/bench/train_throughput.json
    python bench/train_throughput.py --shape 492m             # llama500m's model at seq 1024 (needs a GPU)

(a) ours: smolrecipe.backends.local.train's RecipeTrainer built the way run_stage builds it (the recipe's
    TrainingArguments, LR schedule, JSONL + progress-bar callback, collate_pretrain: build_trainer),
    checkpoint saving off, fed the sequences from an in-memory dataset;
(b) bare: the same model (fresh build_model, same seed), a plain forward / backward / clip /
    AdamW / LambdaLR loop over the same micro-batches, already stacked on the device.

Both train warmup + steps optimizer steps on one device; only the last `--steps` are timed. The
sequences come from the recipe's first stage (batches.PretrainSamples) when its data is prepared, random token
ids otherwise. The two sides alternate (bare, ours, bare, ours, ...) and each reports its median.
Both must start from the same loss (checked). Prints a table and writes JSON; the goal is ratio >= 0.9.
"""

from __future__ import annotations

import sys  # noqa: I001 (must run first)

# bench/ holds tokenize.py, named like a standard-library module that transformers imports:
# take this script's folder off the import path before anything imports `tokenize`.
if sys.path and sys.path[0] == __import__("os").path.dirname(__import__("os").path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import contextlib
import dataclasses
import gc
import math
import platform
import statistics
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SHAPES = {"492m": ROOT / "recipes" / "llama500m.yaml"}  # a recipe whose model section --shape borrows
SHAPE_SEQUENCE = {"492m": 1024}


def bench_recipe(path: Path, shape: str | None, seq: int | None):
    """The recipe, with --shape's model section and --seq's sequence length; paths resolved."""
    from smolrecipe.recipe.envpaths import resolve_recipe
    from smolrecipe.recipe.loading import recipe_from_dict

    data = yaml.safe_load(path.read_text())
    if shape is not None:
        data["model"] = yaml.safe_load(SHAPES[shape].read_text())["model"]
        data["training"]["sequence_length"] = SHAPE_SEQUENCE[shape]
    if seq is not None:
        data["training"]["sequence_length"] = seq
    return resolve_recipe(recipe_from_dict(data, source=str(path)))


def load_sequences(recipe, stage, count: int) -> tuple[list[dict], str]:
    """`count` training sequences in training order: the stage's nanoset blend, else random ids."""
    import numpy as np

    from smolrecipe.data.batches import PretrainSamples
    from smolrecipe.errors import UserError

    seq = recipe.training.sequence_length
    try:
        # Enough steps in the blend index for `count` sequences; the LR schedule keeps the real stage.
        sized = dataclasses.replace(stage, train_steps=max(stage.train_steps, math.ceil(count / stage.global_batch)))
        dataset = PretrainSamples.for_stage(sized, seq, recipe.training.seed)
        return [dataset[i] for i in range(count)], f"{stage.name} nanosets"
    except UserError as err:
        print(f"note: {err.line()}; using random token ids instead")
    tokens = np.random.RandomState(recipe.training.seed).randint(0, recipe.model.vocab_size, (count, seq + 1))
    return [{"input_ids": t, "positions": np.arange(seq + 1)} for t in tokens], "random token ids"


def run_ours(recipe, stage, items: list[dict], warmup: int, steps: int, overrides: dict, tokenizer, out: Path) -> dict:
    """run_stage's pretraining Trainer, checkpoints off, on the in-memory sequences."""
    import torch
    from torch.utils.data import Dataset
    from transformers import TrainerCallback

    from smolrecipe.backends.local.model import build_model
    from smolrecipe.backends.local.train import build_trainer, set_generation_tokens
    from smolrecipe.data.batches import collate_pretrain

    class InMemory(Dataset):
        def __len__(self) -> int:
            return len(items)

        def __getitem__(self, i: int) -> dict:
            return items[i]

    class StepClock(TrainerCallback):
        """perf_counter at the end of the last warmup step and of the last step (device synced there only)."""

        def __init__(self):
            self.marks: dict[int, float] = {}

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in (warmup, warmup + steps):
                if torch.cuda.is_available() and not args.use_cpu:
                    torch.cuda.synchronize()
                self.marks[state.global_step] = time.perf_counter()

    model = build_model(recipe)
    set_generation_tokens(model, recipe, tokenizer)
    out.mkdir(parents=True, exist_ok=True)
    clock = StepClock()
    trainer, log = build_trainer(recipe, stage, model, InMemory(), collate_pretrain, tokenizer, out, [], callbacks=(clock,),
                                 max_steps=warmup + steps, save_strategy="no", **overrides)
    trainer.train()
    assert trainer.state.global_step == warmup + steps, trainer.state.global_step
    losses = {r["step"]: r["loss"] for r in log.records}
    # The last step has no record of its own when the stage logs every 10 steps (stages over 2,000 steps).
    return {"seconds": clock.marks[warmup + steps] - clock.marks[warmup], "first_loss": losses[1],
            "final_loss": losses.get(warmup + steps)}


def run_bare(recipe, stage, batches: dict, warmup: int, steps: int, device, bf16: bool, fused: bool) -> dict:
    """Forward / backward over the accumulated micro-batches, clip, AdamW step, LambdaLR step, zero_grad."""
    import torch

    from smolrecipe.backends.local.model import build_model
    from smolrecipe.backends.lr_schedule import build_scheduler

    opt = recipe.training.optimizer
    model = build_model(recipe).to(device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=stage.lr.peak, betas=(opt.beta1, opt.beta2), eps=opt.eps,
                                  weight_decay=opt.weight_decay, fused=fused or None)
    scheduler = build_scheduler(optimizer, stage)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    ids, mask, labels = batches["input_ids"], batches["attention_mask"], batches["labels"]
    accum = ids.shape[1]
    losses = []
    for step in range(warmup + steps):
        if step == warmup:
            sync()
            start = time.perf_counter()
        total = torch.zeros((), device=device)
        for m in range(ids.shape[1]):
            with autocast:  # the Trainer autocasts the forward only, as here
                # As the Trainer calls it: labels switch the loss on, shift_labels are used as they are;
                # each micro-batch's mean loss counts 1/accumulation of the step's (as in nanotron).
                loss = model(input_ids=ids[step, m], attention_mask=mask[step, m], labels=labels[step, m],
                             shift_labels=labels[step, m]).loss / accum
            loss.backward()
            total += loss.detach()
        if opt.clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), opt.clip_grad)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(total)
    sync()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "first_loss": float(losses[0]), "final_loss": float(losses[-1])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "tiny.yaml")
    parser.add_argument("--shape", choices=sorted(SHAPES), help="train this model shape instead of the recipe's (GPU only)")
    parser.add_argument("--seq", type=int, help="sequence length (default: the recipe's; 1024 with --shape 492m)")
    parser.add_argument("--steps", type=int, default=30, help="timed optimizer steps per measurement")
    parser.add_argument("--warmup", type=int, default=5, help="optimizer steps before the timed ones")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per side, alternating bare and ours")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak for MFU (H100 SXM: 989)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "train_throughput.json")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 1 or args.repeats < 1:
        parser.error("--steps, --warmup and --repeats must be at least 1")

    import torch

    cuda = torch.cuda.is_available() and args.device != "cpu"
    if args.device == "cuda" and not cuda:
        print("error: --device cuda, but torch sees no GPU", file=sys.stderr)
        return 2
    if args.shape is not None and not cuda:
        print(f"train_throughput: the {args.shape} shape trains only on a GPU (no GPU here); skipped")
        return 0

    from smolrecipe.atomic import write_json
    from smolrecipe.backends.local.train import device_settings, training_arguments
    from smolrecipe.data.batches import collate_pretrain
    from smolrecipe.data.tokenizer import load_tokenizer
    from smolrecipe.errors import UserError
    from smolrecipe.recipe.plan import build_plan

    try:
        recipe = bench_recipe(args.recipe, args.shape, args.seq)
        plan = build_plan(recipe)
    except UserError as err:
        print(f"error: {err.with_source(str(args.recipe)).line()}", file=sys.stderr)
        return 2
    stage = next(s for s in plan.stages if s.reads_sources)
    seq, micro, accum = recipe.training.sequence_length, stage.micro_batch_size, stage.grad_accumulation
    tokens_per_step = micro * accum * seq  # one device (the plan's tokens_per_step counts every DP rank)
    total_steps = args.warmup + args.steps

    # The Trainer's device and precision decide the bare loop's, so both run the same arithmetic.
    settings = device_settings(recipe)
    overrides = {} if cuda or settings["use_cpu"] else {"use_cpu": True, "bf16": False}  # --device cpu on a GPU machine
    trainer_args = training_arguments(recipe, stage, Path(tempfile.gettempdir()), [], **overrides)
    device = torch.device("cpu") if trainer_args.use_cpu else torch.device("cuda")
    bf16, fused = bool(trainer_args.bf16), trainer_args.optim == "adamw_torch_fused"
    device_name = settings["device"] if cuda else "cpu"

    items, data_from = load_sequences(recipe, stage, total_steps * micro * accum)
    micro_batches = [collate_pretrain(items[i:i + micro]) for i in range(0, len(items), micro)]
    stacked = {k: torch.stack([b[k] for b in micro_batches]).view(total_steps, accum, micro, seq).to(device)
               for k in ("input_ids", "attention_mask", "labels")}
    try:
        tokenizer = load_tokenizer(recipe.tokenizer.path)
    except Exception:  # the Trainer only keeps it for saving, which the benchmark does not do
        tokenizer = None

    from transformers import LlamaForCausalLM

    from smolrecipe.backends.local.model import llama_config

    with torch.device("meta"):  # count without allocating (tied embeddings once: they are also the LM head)
        params = LlamaForCausalLM(llama_config(recipe)).num_parameters()
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        for repeat in range(args.repeats):
            for side in ("bare", "ours"):
                if side == "bare":
                    result = run_bare(recipe, stage, stacked, args.warmup, args.steps, device, bf16, fused)
                else:
                    out = Path(tmp) / f"ours-{repeat}"
                    result = run_ours(recipe, stage, items, args.warmup, args.steps, overrides, tokenizer, out)
                result = {"side": side, "repeat": repeat, **result, "tokens_per_s": args.steps * tokens_per_step / result["seconds"]}
                runs.append(result)
                gc.collect()
                if cuda:
                    torch.cuda.empty_cache()

    # Same model, data, optimizer and schedule: the first step's loss must agree (bf16 leaves more slack).
    first = {side: [r["first_loss"] for r in runs if r["side"] == side] for side in ("bare", "ours")}
    tolerance = 1e-2 if bf16 else 1e-4
    if not all(math.isclose(a, first["bare"][0], rel_tol=tolerance) for a in first["bare"] + first["ours"]):
        print(f"error: the two loops disagree on the first step's loss: bare {first['bare']}, ours {first['ours']}", file=sys.stderr)
        return 1

    median = {side: statistics.median(r["tokens_per_s"] for r in runs if r["side"] == side) for side in ("bare", "ours")}
    ratio = median["ours"] / median["bare"]
    mfu = None
    if cuda:
        m = recipe.model
        flops_per_token = 6 * params + 12 * m.num_layers * m.hidden_size * seq
        mfu = {"peak_tflops": args.peak_tflops, "flops_per_token": flops_per_token,
               **{side: round(flops_per_token * median[side] / (args.peak_tflops * 1e12), 4) for side in median}}
    rows = [("bare PyTorch loop", median["bare"]), ("smolrecipe Trainer (local_train)", median["ours"])]
    print(f"{'':<34}{'tokens/s':>14}{'s/step':>10}" + (f"{'MFU':>8}" if mfu else ""))
    for (name, rate), side in zip(rows, ("bare", "ours"), strict=True):
        print(f"{name:<34}{rate:>14,.0f}{tokens_per_step / rate:>10.4f}" + (f"{mfu[side]:>8.1%}" if mfu else ""))
    print(f"ratio ours / bare: {ratio:.2f} (goal >= 0.9) on {device_name}{' (bf16)' if bf16 else ''}, {params:,} params, "
          f"seq {seq}, {micro} x {accum} sequences = {tokens_per_step:,} tokens/step, data: {data_from}")
    result = {
        "device": device_name, "recipe": recipe.name, "shape": args.shape, "params": params, "sequence_length": seq,
        "micro_batch_size": micro, "grad_accumulation": accum, "tokens_per_step": tokens_per_step, "bf16": bf16,
        "data": data_from, "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats,
        "bare_tokens_per_s": round(median["bare"]), "ours_tokens_per_s": round(median["ours"]), "ratio": round(ratio, 3),
        "mfu": mfu, "runs": [{k: round(v, 6) if isinstance(v, float) else v for k, v in r.items()} for r in runs],
        "torch_threads": torch.get_num_threads(), "machine": platform.platform(), "python": platform.python_version(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)  # a temp file beside it, then os.replace
    shown = args.out.resolve().relative_to(ROOT) if args.out.resolve().is_relative_to(ROOT) else args.out
    print(f"train_throughput: ours {median['ours']:,.0f} tok/s vs bare {median['bare']:,.0f} tok/s = {ratio:.2f} (goal >= 0.9) "
          f"on {device_name}, {recipe.name} recipe{f' ({args.shape} shape)' if args.shape else ''}, "
          f"{args.steps} steps x {args.repeats} repeats; wrote {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
