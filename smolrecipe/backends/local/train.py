"""The local backend: one stage of the recipe on one machine (CPU, or one GPU), with the HF Trainer.

What makes it the same run as the nanotron one, at a smaller scale: the plan's steps, global batch
(micro-batch x accumulation on one device), LR schedule (smolrecipe.backends.lr_schedule), AdamW settings
with weight decay on every parameter (the rendered config excludes none), gradient clipping, the
batches our nanotron entry point trains on, sample for sample (smolrecipe.data.batches), and
the resume chain: a stage starts from the final checkpoint of the stage it builds on, with or
without that stage's optimizer state, and always with a fresh LR schedule.

Layout, per stage (smolrecipe.runs owns these names): <paths.runs>/<recipe>/<stage>/local/
    checkpoint-<step>/   model + tokenizer (chat template) + optimizer + scheduler + trainer state,
                         renamed into place only when complete
    log.jsonl            one line per logged step: loss, lr, grad norm, tokens, tokens/s
    settings.json        the fingerprint of the settings (config + parent chain) the checkpoints belong to
    summary.json         written last: the stage finished
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import SequentialSampler
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.trainer_utils import get_last_checkpoint

from smolrecipe import runs
from smolrecipe.atomic import replace_folder, write_json
from smolrecipe.backends.arguments import stage_arguments
from smolrecipe.backends.local.model import build_model, llama_config
from smolrecipe.backends.lr_schedule import build_scheduler
from smolrecipe.backends.nanotron.config import stage_fingerprint
from smolrecipe.data.tokenizer import load_tokenizer
from smolrecipe.data.verify import verify_stage_data
from smolrecipe.errors import UserError
from smolrecipe.kinds import kind_of
from smolrecipe.preemption import StopRequest
from smolrecipe.recipe.plan import RunPlan, StagePlan
from smolrecipe.recipe.schema import Recipe
from smolrecipe.runs import LOG, SETTINGS, SUMMARY, read_log

# ---------------------------------------------------------------------------------------------
# Where a stage's files live




# ---------------------------------------------------------------------------------------------
# The trainer: the Trainer's loop with the recipe's schedule, decay set, sampler and checkpoints


class RecipeSchedule:
    """What the recipe changes in any transformers Trainer (ours, TRL's): the plan's LR schedule,
    nanotron's weight-decay set, checkpoints that appear whole or not at all."""

    stage_plan: StagePlan
    _staging: Path | None = None

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            self.lr_scheduler = build_scheduler(optimizer or self.optimizer, self.stage_plan)
        return self.lr_scheduler

    def get_decay_parameter_names(self, model) -> list[str]:
        # nanotron decays every parameter the config does not exclude, and ours excludes none
        # (transformers would skip norms and biases).
        return [name for name, _ in model.named_parameters()]

    def _get_output_dir(self, trial):
        return str(self._staging) if self._staging is not None else super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial):
        """Write checkpoint-<step> under a staging folder, then rename it into place: a job killed
        mid-save leaves the previous checkpoints, never a half-written newest one."""
        out = Path(self.args.output_dir)
        self._staging = out / ".staging"
        shutil.rmtree(self._staging, ignore_errors=True)
        try:
            super()._save_checkpoint(model, trial)
            name = runs.LOCAL_CHECKPOINT.format(step=self.state.global_step)  # transformers' own folder name
            replace_folder(self._staging / name, out / name)
        finally:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None


class RecipeTrainer(RecipeSchedule, Trainer):
    """The Trainer of the kinds our rows feed (pretraining, SFT)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # nanotron's loss is the mean over each micro-batch's loss tokens, averaged over the
        # micro-batches of a step; without loss kwargs the Trainer does the same (with them it
        # would weight every token of the step alike).
        self.model_accepts_loss_kwargs = False

    def _get_train_sampler(self, *args, **kwargs):
        # The samples are in training order already; one process reads them all in that order
        # (nanotron's MegatronPretrainingSampler with one data-parallel rank).
        return SequentialSampler(self.train_dataset)


def trainer_class(base: type) -> type:
    """A kind's own Trainer subclass (TRL's DPO/ORPO trainers) with the recipe's schedule and checkpoints."""
    return type(f"Recipe{base.__name__}", (RecipeSchedule, base), {})


# ---------------------------------------------------------------------------------------------
# Logging: JSONL per stage, a progress bar with loss / LR / tokens per second


# What TRL's preference trainers log beside the loss, kept in log.jsonl under these names.
PREFERENCE_METRICS = {"rewards/accuracies": "reward_accuracy", "rewards/margins": "reward_margin", "nll_loss": "nll_loss"}


class StageLogCallback(TrainerCallback):
    """Appends one JSON line per logged step and keeps the numbers the summary needs."""

    def __init__(self, path: Path, stage: StagePlan):
        self.path, self.stage = path, stage
        self.records: list[dict] = []
        self._last_time: float | None = None
        self._last_tokens = 0
        self._start = time.perf_counter()
        self.progress = None

    def tokens(self, state) -> int:
        # Sequence-length windows (SFT rows padded to it), as nanotron counts consumed tokens.
        return state.global_step * self.stage.tokens_per_step

    def on_train_begin(self, args, state, control, **kwargs):
        from tqdm.auto import tqdm

        self._last_time, self._last_tokens = time.perf_counter(), self.tokens(state)
        # In a batch log (SLURM, CI) a redraw per step is noise: redraw every few seconds there.
        self.progress = tqdm(total=state.max_steps, initial=state.global_step, desc=self.stage.name, unit="step",
                             dynamic_ncols=True, mininterval=0.1 if sys.stderr.isatty() else 5.0,
                             disable=not state.is_world_process_zero)

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(state.global_step - self.progress.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        now, tokens = time.perf_counter(), self.tokens(state)
        rate = (tokens - self._last_tokens) / max(now - self._last_time, 1e-9)
        self._last_time, self._last_tokens = now, tokens
        record = {"stage": self.stage.name, "kind": self.stage.kind, "step": state.global_step,
                  "train_steps": self.stage.train_steps, "tokens": tokens, "loss": float(logs["loss"]),
                  "lr": float(logs.get("learning_rate", float("nan"))), "grad_norm": float(logs.get("grad_norm", float("nan"))),
                  "tokens_per_s": round(rate, 1), "elapsed_s": round(now - self._start, 3)}
        record.update({name: float(logs[key]) for key, name in PREFERENCE_METRICS.items() if key in logs})
        self.records.append(record)
        if not state.is_world_process_zero:  # torchrun (the cluster's preference stage): one rank writes
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.progress is not None:
            self.progress.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}", tok_s=f"{rate:,.0f}", refresh=False)

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.close()


class CheckpointAndStop(TrainerCallback):
    """At the end of the step during which a stop was requested (SLURM's warning signal before
    the time limit or a preemption, or the job's stop file): save a checkpoint and end training
    there, so that the requeued job resumes at the next step and repeats none."""

    def __init__(self, stop: StopRequest | None, stop_file: Path | None = None):
        self.stop, self.stop_file = stop, stop_file

    def requested(self) -> bool:
        asked = bool(self.stop is not None and self.stop.requested) or bool(self.stop_file and self.stop_file.exists())
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # Every rank must stop at the same step (the save is collective): stop when any rank was asked.
            flag = torch.tensor([float(asked)], device="cuda" if torch.cuda.is_available() else "cpu")
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            asked = bool(flag.item())
        return asked

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step < state.max_steps and self.requested():
            control.should_save = True
            control.should_training_stop = True
        return control


# ---------------------------------------------------------------------------------------------
# Running a stage


@dataclass
class StageResult:
    stage: str
    summary: dict
    skipped: bool = False
    stopped: bool = False  # ended early with a checkpoint (a stop request, or --max-steps)

    def line(self) -> str:
        s = self.summary
        if self.skipped:
            return f"{s['stage']}: already finished ({s['steps']} steps, final loss {s['final_loss']:.3f}); {s['checkpoint']}"
        if self.stopped:
            return f"{s['stage']}: stopped at step {s['steps']} of {s['train_steps']} with a checkpoint; rerun with --resume to continue"
        return (f"{s['stage']}: {s['steps']} steps, {s['tokens']:,} tokens in {s['seconds']:.1f} s "
                f"({s['tokens_per_s']:,.0f} tok/s on {s['device']}), loss {s['first_loss']:.3f} -> {s['final_loss']:.3f}; "
                f"{s['checkpoint']}")


def device_settings(recipe: Recipe) -> dict[str, Any]:
    """bf16 where the recipe trains in bf16 and the GPU supports it; fp32 on CPU (CPU bf16 autocast
    is slower than fp32 and not what a rehearsal needs to prove)."""
    cuda = torch.cuda.is_available()
    bf16 = cuda and recipe.model.dtype == "bfloat16" and torch.cuda.is_bf16_supported()
    return {"use_cpu": not cuda, "bf16": bf16, "device": torch.cuda.get_device_name(0) if cuda else "cpu"}


def training_arguments(recipe: Recipe, stage: StagePlan, out: Path, report_to: list[str], arguments: type = TrainingArguments,
                       processes: int = 1, **extra) -> TrainingArguments:
    """The stage's TrainingArguments (or a TRL subclass of them, `arguments`); `extra` overrides."""
    device = device_settings(recipe)
    common = stage_arguments(recipe, stage, processes, cuda=not device["use_cpu"], bf16=device["bf16"])
    common.update(output_dir=str(out), run_name=f"{recipe.name}-{stage.name}", report_to=report_to, **extra)
    return arguments(**common)


def wandb_settings(recipe: Recipe, out: Path) -> list[str]:
    """report_to for the Trainer; offline unless the recipe asks for online (compute nodes have no internet)."""
    if recipe.tracking.wandb_mode == "disabled" or os.environ.get("WANDB_MODE") == "disabled":
        return []
    os.environ.setdefault("WANDB_MODE", recipe.tracking.wandb_mode)  # the user's environment wins
    os.environ.setdefault("WANDB_PROJECT", recipe.tracking.project)
    os.environ.setdefault("WANDB_SILENT", "true")
    # One wandb/ folder per recipe run (wandb reads its directory once per process, so a per-stage
    # folder would not hold for `--stage all`), one run per stage, grouped by recipe.
    os.environ["WANDB_DIR"] = str(out.parent.parent)
    os.environ.setdefault("WANDB_RUN_GROUP", recipe.name)
    return ["wandb"]


def load_parent(recipe: Recipe, plan: RunPlan, stage: StagePlan, folder: Path | None = None) -> tuple[LlamaForCausalLM, Path]:
    """The model the stage starts from: its parent's final local checkpoint, or `folder` (the
    cluster's preference stage: the parent's nanotron checkpoint converted to a transformers folder)."""
    folder = folder or runs.local_final_checkpoint(recipe, plan.stage(stage.init_from))
    if not folder.is_dir():
        raise UserError(f"{stage.name}.init_from", f"{stage.init_from} has not finished: {folder} does not exist",
                          f"train it first: python tools/train_local.py RECIPE --stage {stage.init_from}")
    # The stage's own RoPE base and length: a context extension's parent was saved with the old ones,
    # and RoPE has no weights, so the same weights load under the new config.
    expected = llama_config(recipe, stage)
    saved = LlamaConfig.from_pretrained(folder)
    saved.rope_parameters = expected.rope_parameters
    saved.max_position_embeddings = expected.max_position_embeddings
    model = LlamaForCausalLM.from_pretrained(folder, config=saved)
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "vocab_size"):
        if getattr(model.config, key) != getattr(expected, key):
            raise UserError("model", f"{folder} has {key}={getattr(model.config, key)}, the recipe {getattr(expected, key)}",
                              f"retrain {stage.init_from} with this recipe")
    model.config.use_cache = False
    return model, folder


def carry_optimizer_state(trainer: Trainer, parent: Path, stage: StagePlan) -> None:
    """Start from the parent stage's AdamW moments, with this stage's own LR schedule."""
    state_file = parent / "optimizer.pt"
    if not state_file.is_file():
        raise UserError(f"{stage.name}.load_optimizer", f"{state_file} does not exist",
                          "set load_optimizer: false, or retrain the parent stage (its checkpoints keep optimizer state)")
    trainer.create_optimizer()
    trainer.optimizer.load_state_dict(torch.load(state_file, map_location="cpu", weights_only=True))
    for group in trainer.optimizer.param_groups:
        group["lr"] = stage.lr.peak
        group.pop("initial_lr", None)  # else LambdaLR would scale the parent's peak


def set_generation_tokens(model, recipe: Recipe, tokenizer) -> None:
    """Generation stops at the end-of-turn token: the saved model answers a chat and stops."""
    pad = getattr(tokenizer, "pad_token_id", None)
    pad = pad if pad is not None else recipe.tokenizer.eos_token_id
    model.config.pad_token_id = model.generation_config.pad_token_id = pad
    model.generation_config.eos_token_id = recipe.tokenizer.eos_token_id
    model.generation_config.bos_token_id = recipe.tokenizer.bos_token_id


def build_trainer(recipe: Recipe, stage: StagePlan, model, dataset, collate, tokenizer, out: Path, report_to: list[str],
                  callbacks: tuple[TrainerCallback, ...] = (), processes: int = 1, **overrides) -> tuple[Trainer, StageLogCallback]:
    """The stage's trainer, with our logging in place of transformers' printers: ours over the
    kind's rows, or the kind's own (TRL's) with the arguments of its method."""
    kind, spec = kind_of(stage.kind), recipe.stage(stage.name)
    own = kind.trainer(spec)
    log = StageLogCallback(out / LOG, stage)
    if own is None:
        args = training_arguments(recipe, stage, out, report_to, processes=processes, **overrides)
        trainer = RecipeTrainer(model=model, args=args, train_dataset=dataset, data_collator=collate,
                                processing_class=tokenizer, callbacks=[log, *callbacks])
    else:
        base, arguments = own
        settings = {**kind.trainer_settings(recipe, spec), "remove_unused_columns": True, **overrides}
        args = training_arguments(recipe, stage, out, report_to, arguments, processes, **settings)
        trainer = trainer_class(base)(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                      callbacks=[log, *callbacks])
    trainer.stage_plan = stage
    for callback in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(callback)
    return trainer, log


def run_stage(recipe: Recipe, plan: RunPlan, stage_name: str, resume: bool = False, restart: bool = False,
              max_steps: int | None = None, stop: StopRequest | None = None, recipe_path: str = "RECIPE",
              out: Path | None = None, parent_folder: Path | None = None, stop_file: Path | None = None) -> StageResult:
    """Train one stage; returns its summary. A finished stage is not run again. When `stop` is
    requested (a signal) or `stop_file` appears, the stage ends at the current step with a checkpoint.

    `out` (default: the local backend's stage folder) and `parent_folder` (default: the parent
    stage's final local checkpoint) let the cluster's preference job, one process per GPU under
    torchrun, train in its own stage folder from a converted checkpoint (tools/train_preference.py)."""
    stage = plan.stage(stage_name)
    out = Path(out) if out is not None else runs.local_dir(recipe, stage.name)
    final = runs.local_checkpoint(out, stage.train_steps)
    processes = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun; the Trainer's ranks share the global batch
    main_process = int(os.environ.get("RANK", "0")) == 0
    if restart and out.exists():
        shutil.rmtree(out)
    fingerprint = stage_fingerprint(plan, stage)
    last = get_last_checkpoint(str(out)) if out.is_dir() else None
    done = runs.read_summary(out)
    if last or done:
        # Checkpoints are only continued, and a finished stage only reused, under the settings they were made with.
        recorded = runs.read_settings(out)
        if recorded.get("fingerprint") != fingerprint:
            raise UserError("recipe", f"{out} was trained with other settings than the recipe's now "
                              f"(the stage's config or a parent stage changed)", "pass --restart to train it again")
    if done is not None and final.is_dir():
        return StageResult(stage.name, done, skipped=True)
    if last and not resume:
        raise UserError("--resume", f"{out} already has {Path(last).name} from an earlier run",
                          "pass --resume to continue it, or --restart to start the stage over")
    # Before anything is written: the model's vocabulary against the tokenizer folder, the folders
    # the stage reads against their manifests (tools/train_local.py comes here without the backend's prepare).
    verify_stage_data(recipe, stage, recipe_path)
    if main_process:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / SETTINGS, {"stage": stage.name, "index": plan.index(stage.name), "fingerprint": fingerprint,
                                    "recipe_hash": recipe.hash()})

    tokenizer = load_tokenizer(recipe.tokenizer.path)
    parent = None
    if stage.init_from is not None:
        model, parent = load_parent(recipe, plan, stage, parent_folder)
    else:
        model = build_model(recipe)
    set_generation_tokens(model, recipe, tokenizer)
    kind = kind_of(stage.kind)
    dataset, collate = kind.local_data(recipe, stage, tokenizer)
    report_to = wandb_settings(recipe, out)
    extra = {"max_steps": max_steps} if max_steps is not None else {}
    callbacks = (CheckpointAndStop(stop, stop_file),) if stop is not None or stop_file is not None else ()
    trainer, log = build_trainer(recipe, stage, model, dataset, collate, tokenizer, out, report_to, callbacks,
                                 processes=processes, **extra)
    optimizer_from = None
    if parent is not None and stage.load_optimizer and not (resume and last):
        carry_optimizer_state(trainer, parent, stage)
        optimizer_from = str(parent / "optimizer.pt")

    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=last if resume and last else None)
    seconds = time.perf_counter() - started
    if report_to:  # transformers leaves the wandb run open; the next stage must get its own
        import wandb

        wandb.finish()
    if trainer.state.global_step < stage.train_steps:
        return StageResult(stage.name, {"stage": stage.name, "steps": trainer.state.global_step,
                                        "train_steps": stage.train_steps}, stopped=True)

    records = read_log(out / LOG)[0] if (out / LOG).is_file() else []
    ran = log.records
    summary = {
        "stage": stage.name, "kind": stage.kind, "index": plan.index(stage.name),
        "train_steps": stage.train_steps, "steps": trainer.state.global_step,
        "tokens": log.tokens(trainer.state),
        "first_loss": records[0]["loss"] if records else math.nan,
        "final_loss": records[-1]["loss"] if records else math.nan,
        "seconds": round(seconds, 2),
        # the median step: the first one also pays for start-up
        "tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in ran), 1) if ran else math.nan,
        "checkpoint": str(final), "init_from": str(parent) if parent else None,
        "optimizer_from": optimizer_from,
        "recipe_hash": recipe.hash(), "fingerprint": fingerprint, "device": device_settings(recipe)["device"],
        **kind.data_stats(dataset),
    }
    if main_process:
        write_json(out / SUMMARY, summary)
    return StageResult(stage.name, summary)
