"""Our nanotron entry point: one stage, trained from its rendered config by nanotron's own
`DistributedTrainer`, model classes, optimizer, LR schedule and checkpoint code.

    torchrun --standalone --nproc_per_node=4 tools/train_nanotron.py --config-file <run>/<stage>/config.yaml

The SLURM stage jobs run it instead of nanotron's `run_train.py`, which cannot train our stages at
the pinned commit. What it does differently, each time in our code and never by editing nanotron:

- **The LR schedule on resume.** `load_lr_scheduler` calls the scheduler's `_initial_step()` after
  loading its state, which steps it once more: every resumed step would train with the LR of the
  step after it. We load the saved state again and put its LR back on the optimizer.
- **Random init of a LLaMA model.** `LlamaForTraining.init_model_randomly` hands its parametrizator
  `config.model`, from which the parametrizator reads `config.model.init_method` (AttributeError;
  the Qwen2 class passes the whole config). We hand it a view that satisfies both reads.
- **Data.** The dataloaders are built here from `smolrecipe.data.batches`, the one data path the local
  backend trains on too: nanotron's `MegatronPretrainingSampler` and `DataCollatorForCLM` over our
  blended samples for pretraining (`run_train.py` reads TokenizedBytes through Megatron's
  `BlendableDataset`, which asserts "s3" in every blended folder's path), and right-padded SFT rows
  with the loss on completion tokens only (`run_train.py`'s SFT path fails with a TypeError before
  step 1, pads on the left while its label mask assumes the right, and its CLM collator puts the
  loss on every token of a LlamaConfig).
- **Logs.** Every step appends the local backend's record to `<run>/<stage>/log.jsonl`; the end
  writes `summary.json`, so `tools/report.py` draws a nanotron run as it draws a rehearsal.
- **Stop requests.** SIGUSR1 (or the stop file the SLURM job writes on SIGUSR1) ends the run at the
  end of the current step, on every rank at once, with a checkpoint, exit code 75 (requeue).

It runs wherever nanotron runs: GPUs with flash-attn on the cluster; on a CPU only with the
test shims in tests/engine_cpu (torch stand-ins for the three flash-attn kernels, device placement).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from smolrecipe.preemption import PREEMPTED, StopRequest

STOP = StopRequest().install()  # before the heavy imports: a signal during them still counts

import torch  # noqa: E402
from nanotron import distributed as dist  # noqa: E402
from nanotron.data.samplers import MegatronPretrainingSampler  # noqa: E402
from nanotron.models.llama import LlamaForTraining  # noqa: E402
from nanotron.serialize.optimizer import lr_scheduler_filename  # noqa: E402
from nanotron.trainer import DistributedTrainer  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from smolrecipe.atomic import write_file, write_json  # noqa: E402
from smolrecipe.kinds import KINDS, kind_for_nanotron_dataset  # noqa: E402
from smolrecipe.runs import LOG, SETTINGS, STOP_FILE, SUMMARY, read_json_if_any, read_log  # noqa: E402


class Preempted(Exception):
    """Raised on every rank at the end of the step in which a stop was requested, after the checkpoint."""


def parametrizator_view(config):
    """What LlamaForTraining.init_model_randomly(config) needs to work at the pinned commit: it reads
    `config.model.init_method` itself and passes `config.model` to StandardParametrizator, which
    reads `.model.init_method`, `.model.model_config` and `.parallelism` from what it is given."""
    model = SimpleNamespace(init_method=config.model.init_method, model=config.model, parallelism=config.parallelism)
    return SimpleNamespace(model=model)


class StageTrainer(DistributedTrainer):
    """nanotron's trainer for one of our stages: our dataloader, our logs, save-on-stop."""

    def __init__(self, config_file: str, run_dir: Path, stop: StopRequest):
        self.run_dir, self.stop = run_dir, stop
        self.stop_file = run_dir / STOP_FILE
        super().__init__(config_file)
        self._undo_extra_lr_step()
        # Our log and the stop check run in train_step_logs, which nanotron calls every
        # `iteration_step_info_interval` steps: every step, then.
        self.config.logging.iteration_step_info_interval = 1
        if len(self.config.data_stages) != 1:
            raise SystemExit(f"{config_file}: one data stage per config (ours render one per recipe stage), "
                             f"found {len(self.config.data_stages)}")
        self.data_stage = self.config.data_stages[0]
        self.dataset_args = self.data_stage.data.dataset
        self.settings = read_json_if_any(run_dir / SETTINGS)
        self.kind = kind_for_nanotron_dataset(type(self.dataset_args).__name__)
        # Kinds that share a dataset section (pretrain, anneal, long_context) train alike; the job's
        # settings name the stage's own, which its logs and summary record.
        named = KINDS.get(self.settings.get("kind", ""))
        if named is not None and named.nanotron_dataset_class == self.kind.nanotron_dataset_class:
            self.kind = named
        self.is_logger = dist.get_rank(self.parallel_context.world_pg) == 0
        self.step_seconds: list[float] = []
        self._last_time = self._start = time.perf_counter()

    # -----------------------------------------------------------------------------------------
    # model

    def _load_model_checkpoint(self, model):
        unwrapped = model.module if isinstance(model, DistributedDataParallel) else model
        if isinstance(unwrapped, LlamaForTraining):
            unwrapped.init_model_randomly = lambda config: LlamaForTraining.init_model_randomly(
                unwrapped, parametrizator_view(config))
        return super()._load_model_checkpoint(model)

    def _undo_extra_lr_step(self) -> None:
        if self.init_checkpoint_path is None or not self.config.checkpoints.load_lr_scheduler:
            return
        name = lr_scheduler_filename(self.parallel_context, self.config.optimizer.zero_stage)
        state = torch.load(Path(self.init_checkpoint_path) / "lr_scheduler" / name, weights_only=False)
        self.lr_scheduler.load_state_dict(state)
        for group, lr in zip(self.lr_scheduler.optimizer.param_groups, state["_last_lr"], strict=True):
            group["lr"] = lr

    # -----------------------------------------------------------------------------------------
    # data

    def dataloader(self) -> DataLoader:
        """This rank's micro-batches from the stage's next unconsumed sample on (resumes included)."""
        n_samples = self.config.tokens.train_steps * self.global_batch_size
        dataset, collate = self.kind.engine_data(self, self.dataset_args, n_samples)
        sampler = MegatronPretrainingSampler(
            total_samples=len(dataset), consumed_samples=self.metadata.current_stage.consumed_train_samples,
            micro_batch_size=self.micro_batch_size, data_parallel_rank=dist.get_rank(self.parallel_context.dp_pg),
            data_parallel_size=self.parallel_context.dp_pg.size(), global_batch_size=self.global_batch_size)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=0,
                          pin_memory=torch.cuda.is_available())

    # -----------------------------------------------------------------------------------------
    # per step: our log record, then the stop check

    def train_step_logs(self, outputs, loss_avg, z_loss_avg, tbi_logs) -> None:
        super().train_step_logs(outputs, loss_avg, z_loss_avg, tbi_logs)  # nanotron's console line and wandb
        now = time.perf_counter()
        seconds, self._last_time = now - self._last_time, now
        # Sequence-length windows (SFT rows are padded to it), as the local backend counts them.
        tokens = int(self.metadata.current_stage.consumed_train_samples * self.sequence_length)
        if self.is_logger:
            self.step_seconds.append(seconds)
            step_tokens = self.global_batch_size * self.sequence_length
            record = {"stage": self.data_stage.name, "kind": self.kind.name, "step": self.iteration_step,
                      "train_steps": self.config.tokens.train_steps, "tokens": tokens, "loss": float(loss_avg.item()),
                      "lr": float(self.lr_scheduler.get_last_lr()[0]),
                      "grad_norm": float(self.grad_norm_unclipped.item()) if self.config.optimizer.clip_grad is not None else float("nan"),
                      "tokens_per_s": round(step_tokens / max(seconds, 1e-9), 1), "elapsed_s": round(now - self._start, 3)}
            with (self.run_dir / LOG).open("a") as f:
                f.write(json.dumps(record) + "\n")
        if self.stop_requested() and self.iteration_step < self.config.tokens.train_steps:
            self.save_checkpoint()
            raise Preempted(self.iteration_step)

    def stop_requested(self) -> bool:
        """Whether any rank has been asked to stop (a signal, or the job's stop file): every rank
        must leave at the same step, or the others would wait forever in the next collective."""
        wanted = torch.tensor([int(self.stop.requested or self.stop_file.exists())], device=_device())
        dist.all_reduce(wanted, op=dist.ReduceOp.MAX, group=self.parallel_context.world_pg)
        return bool(wanted.item())

    # -----------------------------------------------------------------------------------------
    # start and end

    def keep_log_until(self, step: int) -> None:
        """A resumed run repeats the steps after its checkpoint: drop their old records first."""
        path = self.run_dir / LOG
        if not self.is_logger or not path.is_file():
            return
        kept = [record for record in read_log(path)[0] if record["step"] <= step]
        write_file(path, "".join(json.dumps(record) + "\n" for record in kept))

    def write_summary(self, seconds: float) -> dict:
        records = read_log(self.run_dir / LOG)[0]
        checkpoint = Path(self.config.checkpoints.checkpoints_path) / str(self.iteration_step)
        resume = self.config.checkpoints.resume_checkpoint_path
        summary = {
            "stage": self.data_stage.name, "kind": self.kind.name, "index": self.settings.get("index"),
            "train_steps": self.config.tokens.train_steps, "steps": self.iteration_step,
            "tokens": records[-1]["tokens"] if records else 0,
            "first_loss": records[0]["loss"] if records else float("nan"),
            "final_loss": records[-1]["loss"] if records else float("nan"),
            "seconds": round(seconds, 2),
            "tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in records[-len(self.step_seconds):]), 1)
            if self.step_seconds else float("nan"),
            "checkpoint": str(checkpoint), "init_from": str(resume) if resume else None,
            "optimizer_from": str(resume) if resume and self.config.checkpoints.load_optimizer else None,
            "recipe_hash": self.settings.get("recipe_hash"), "fingerprint": self.settings.get("fingerprint"),
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
            "backend": "nanotron", "world_size": self.parallel_context.world_pg.size(),
            **self.kind.data_stats(self.current_base_dl.dataset),
        }
        write_json(self.run_dir / SUMMARY, summary)
        return summary


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")



def train(config_file: str, run_dir: Path | None = None, stop: StopRequest = STOP) -> int:
    """Train the stage of `config_file`; 0 when it finished, PREEMPTED when it stopped at a checkpoint."""
    run_dir = Path(run_dir) if run_dir is not None else Path(config_file).resolve().parent
    trainer = StageTrainer(config_file, run_dir, stop)
    start_step = trainer.metadata.last_train_step
    trainer.keep_log_until(start_step)
    started = time.perf_counter()
    try:
        trainer.train({trainer.data_stage.name: trainer.dataloader()})
    except Preempted as stopped:
        if trainer.is_logger:
            print(f"{trainer.data_stage.name}: stopped at step {stopped} of {trainer.config.tokens.train_steps} "
                  f"with a checkpoint ({stop.name if stop.requested else 'stop file'}); run the job again to continue",
                  flush=True)
        return PREEMPTED
    if trainer.is_logger:
        s = trainer.write_summary(time.perf_counter() - started)
        print(f"{s['stage']}: {s['steps'] - start_step} steps on nanotron ({s['world_size']} x {s['device']}), "
              f"{s['tokens']:,} tokens in {s['seconds']:.1f} s ({s['tokens_per_s']:,.0f} tok/s), "
              f"loss {s['first_loss']:.3f} -> {s['final_loss']:.3f}; {s['checkpoint']}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="a stage config rendered by tools/make_config.py --resolve")
    parser.add_argument("--run-dir", help="where log.jsonl, summary.json and the stop file live (default: the config's folder)")
    args = parser.parse_args(argv)
    rc = train(args.config_file, Path(args.run_dir) if args.run_dir else None)
    if dist.is_initialized():
        dist.destroy_process_group()
    return rc


if __name__ == "__main__":
    sys.exit(main())
