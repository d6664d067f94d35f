"""The cluster backend: our nanotron entry point under torchrun, one process per GPU.

The job's config is rendered with its paths resolved to `<runs>/<recipe>/<stage>/config.yaml` and
trained by `torchrun --standalone --nproc_per_node=<gpus> tools/train_nanotron.py --config-file
<config>` (smolrecipe.backends.nanotron.train: nanotron's own trainer, our dataloaders, logs and
save-on-stop). On a stop request the job writes the run folder's stop file; every rank sees it at
the end of its step, nanotron saves a checkpoint there and the workers exit; only a run that does
not stop within `STOP_GRACE_S` is ended by a signal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from smolrecipe import PROJECT_ROOT
from smolrecipe.atomic import write_file, write_json
from smolrecipe.backends.base import Backend, PreparedStage
from smolrecipe.backends.nanotron.config import stage_fingerprint
from smolrecipe.data.verify import verify_stage_data
from smolrecipe.errors import UserError
from smolrecipe.kinds import kind_of
from smolrecipe.preemption import PREEMPTED, StopRequest
from smolrecipe.recipe.envpaths import resolve_recipe
from smolrecipe.recipe.plan import StagePlan, build_plan
from smolrecipe.recipe.schema import Recipe
from smolrecipe.runs import CONFIG, SETTINGS, STOP_FILE, SUMMARY, latest_step, read_json_if_any, read_settings, stage_dir
from smolrecipe.runs import local_checkpoint as hf_checkpoint

ENTRY_POINT = PROJECT_ROOT / "tools" / "train_nanotron.py"
TRL_ENTRY_POINT = PROJECT_ROOT / "tools" / "train_preference.py"  # the stages of "trl" kinds
INIT_FOLDER = "init"  # <stage>/init: the parent's checkpoint as a transformers folder, for a TRL stage
STOP_GRACE_S = 480.0  # SLURM warns 600 s before the limit: time for a step and a checkpoint


def nanotron_command(gpus: int, config: Path) -> list[str]:
    return ["torchrun", "--standalone", f"--nproc_per_node={gpus}", str(ENTRY_POINT), "--config-file", str(config)]


def nanotron_environment(recipe: Recipe) -> dict[str, str]:
    """This process's environment plus wandb's settings from the recipe (nanotron logs to wandb
    whenever wandb is importable; compute nodes have no internet, so offline unless the recipe or
    the user's environment says otherwise)."""
    env = dict(os.environ)
    wandb_mode = "disabled" if recipe.tracking.wandb_mode == "disabled" else env.get("WANDB_MODE", recipe.tracking.wandb_mode)
    env.update(WANDB_MODE=wandb_mode, WANDB_PROJECT=env.get("WANDB_PROJECT", recipe.tracking.project))
    env.setdefault("WANDB_DIR", str(Path(stage_dir(recipe, "wandb")).parent))
    return env


def run_until_stopped(command: list[str], stop: StopRequest, stop_file: Path | None = None, poll_s: float = 1.0,
                      env: dict[str, str] | None = None, grace_s: float = STOP_GRACE_S) -> int:
    """Run `command` in its own process group. On a stop request, write `stop_file` (the run stops
    itself at a checkpoint) or, without one, or when the run has not ended `grace_s` later, end the
    group with SIGTERM (torchrun passes it on to its workers); return PREEMPTED."""
    proc = subprocess.Popen(command, start_new_session=True, env=env)
    asked_at = None
    terminated = False
    while True:
        try:
            proc.wait(timeout=poll_s)
            break
        except KeyboardInterrupt:  # its own session does not see the terminal's Ctrl-C: pass it on
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait()
            raise
        except subprocess.TimeoutExpired:
            if not stop.requested:
                continue
            if asked_at is None:
                asked_at = time.monotonic()
                if stop_file is not None:
                    print(f"{stop.name}: asking the run to stop at the end of its step, with a checkpoint", flush=True)
                    write_file(stop_file, f"{stop.name}\n")
            if not terminated and (stop_file is None or time.monotonic() - asked_at > grace_s):
                print(f"{stop.name}: ending {command[0]}; the requeued job resumes from the newest checkpoint", flush=True)
                os.killpg(proc.pid, signal.SIGTERM)
                terminated = True
    if proc.returncode == 0:
        return 0  # finished before it could stop
    return PREEMPTED if stop.requested else proc.returncode


class NanotronBackend(Backend):
    name = "nanotron"

    def prepare(self, recipe_path: str, name: str, gpus: int, dry_run: bool = False) -> PreparedStage | None:
        """Check the stage and write its resolved config; None when the stage has already finished."""
        from smolrecipe.backends.nanotron.generate import render  # renders with the resume chain resolved against disk

        rendered = render(recipe_path, resolve=True)
        recipe = resolve_recipe(rendered.recipe)
        stage = rendered.plan.checked_stage(name)
        processes = recipe.parallelism.world
        if kind_of(stage.kind).engine == "trl":
            return self._prepare_trl(recipe_path, rendered, recipe, stage, gpus, dry_run)
        if gpus != processes:
            raise UserError("parallelism", f"dp x tp x pp = {processes} processes, but the job has {gpus} GPU(s)",
                            f"submit with --gpus-per-node={processes} (tools/submit.py takes cluster.gpus_per_node), "
                            "or change parallelism to match the node")
        run_dir = Path(stage_dir(recipe, name))
        step = latest_step(stage.checkpoints_path)
        as_planned = build_plan(recipe)  # the fingerprint is of the stage itself, not of where this job resumes
        fingerprint = stage_fingerprint(as_planned, as_planned.stage(name))
        if step is not None:
            recorded = read_settings(run_dir).get("fingerprint")
            if recorded is not None and recorded != fingerprint:
                raise UserError("recipe", f"{stage.checkpoints_path} holds checkpoints made with other settings than the "
                                "recipe's now (the stage's config or a parent stage changed)",
                                f"move {run_dir} away to train the stage again")
            if step >= stage.train_steps:
                return None
        if stage.init_from is not None and step is None:
            parent = rendered.plan.stage(stage.init_from)
            if latest_step(parent.checkpoints_path) != parent.train_steps and not dry_run:
                raise UserError(f"{name}.init_from", f"{stage.init_from} has not finished: {parent.final_checkpoint()} "
                                "does not exist", f"train {stage.init_from} first (slurm/{stage.init_from}.sh)")
        # The folders the stage reads against their manifests, the model's vocabulary against the
        # tokenizer folder; the metadata's tokenizer name exactly as the config writes it (nanotron compares strings).
        verify_stage_data(recipe, stage, recipe_path, exact_tokenizer=True)
        config = run_dir / CONFIG
        write_file(config, rendered.files[f"{name}.yaml"])
        write_json(run_dir / SETTINGS, {"stage": name, "index": as_planned.index(name), "kind": stage.kind,
                                        "fingerprint": fingerprint, "recipe_hash": rendered.recipe.hash(), "backend": self.name})
        (run_dir / STOP_FILE).unlink(missing_ok=True)  # a stop file left by the previous (requeued) job
        resumes_from = stage.resume_checkpoint_path if (step is not None or stage.init_from is not None) else None
        return PreparedStage(recipe, stage, resumes_from, nanotron_command(gpus, config), config)

    def _prepare_trl(self, recipe_path: str, rendered, recipe: Recipe, stage: StagePlan, gpus: int,
                     dry_run: bool) -> PreparedStage | None:
        """A stage TRL trains (preference): the parent's final checkpoint as a transformers folder
        (converted from nanotron's once), the resolved config for the record, and the torchrun command
        of tools/train_preference.py, one process per GPU. None when it has finished."""
        run_dir = Path(stage_dir(recipe, stage.name))
        if read_json_if_any(run_dir / SUMMARY) and hf_checkpoint(run_dir, stage.train_steps).is_dir():
            return None
        if gpus < 1:
            raise UserError("--gpus", f"{stage.name} is trained by TRL on the node's GPUs, and the job has none",
                            "submit it with GPUs (tools/submit.py does), or train it with SMOLRECIPE_BACKEND=local")
        parent = rendered.plan.stage(stage.init_from)
        init = run_dir / INIT_FOLDER
        if not dry_run:
            init = self.parent_as_hf(recipe, rendered.plan, parent, init)
        verify_stage_data(recipe, stage, recipe_path)
        config = run_dir / CONFIG
        write_file(config, rendered.files[f"{stage.name}.yaml"])
        (run_dir / STOP_FILE).unlink(missing_ok=True)  # a stop file left by the previous (requeued) job
        command = ["torchrun", "--standalone", f"--nproc_per_node={gpus}", str(TRL_ENTRY_POINT), recipe_path, stage.name,
                   "--init", str(init)]
        return PreparedStage(recipe, stage, str(init), command, config)

    def parent_as_hf(self, recipe: Recipe, plan, parent: StagePlan, out: Path) -> Path:
        """The parent stage's final checkpoint as a transformers folder: a nanotron one converted
        (float32, so that the Trainer keeps fp32 master weights under bf16 autocast) into `out`,
        redone when the parent was retrained; a TRL-trained parent's own final folder."""
        from smolrecipe.backends.nanotron import convert

        if kind_of(parent.kind).engine == "trl":
            folder = hf_checkpoint(Path(stage_dir(recipe, parent.name)), parent.train_steps)
            if not folder.is_dir():
                raise UserError(f"{parent.name}", f"{folder} does not exist", f"train {parent.name} first (slurm/{parent.name}.sh)")
            return folder
        source = Path(parent.final_checkpoint())
        if latest_step(parent.checkpoints_path) != parent.train_steps or not source.is_dir():
            raise UserError(f"{parent.name}", f"{parent.name} has not finished: {source} does not exist",
                            f"train {parent.name} first (slurm/{parent.name}.sh)")
        marker = out.parent / f"{INIT_FOLDER}.json"
        wanted = {"source": str(source), "fingerprint": stage_fingerprint(plan, parent)}
        if read_json_if_any(marker) == wanted and (out / "config.json").is_file():
            return out
        print(f"{parent.name}: converting {source} to a transformers folder at {out}", flush=True)
        convert.nanotron_to_hf(source, out, tokenizer=recipe.tokenizer.path, dtype="float32")
        write_json(marker, wanted)
        return out

    def run(self, prepared: PreparedStage, stop: StopRequest) -> int:
        return run_until_stopped(prepared.command, stop, stop_file=prepared.config.parent / STOP_FILE,
                                 env=nanotron_environment(prepared.recipe))

    def final_checkpoint(self, recipe: Recipe, stage: StagePlan, recipe_path: str) -> Path:
        if kind_of(stage.kind).engine == "trl":  # a transformers folder in the stage folder
            checkpoint = hf_checkpoint(Path(stage_dir(recipe, stage.name)), stage.train_steps)
        else:
            checkpoint = Path(stage.final_checkpoint())
        if not checkpoint.is_dir():
            raise UserError(stage.name, f"{checkpoint} does not exist", f"train it first: sbatch slurm/{stage.name}.sh {recipe_path}")
        return checkpoint

    def owns(self, checkpoint: Path) -> bool:
        from smolrecipe.backends.nanotron import convert

        path = convert.resolve_checkpoint(Path(checkpoint))
        return path.is_dir() and convert.is_nanotron_checkpoint(path)

    @contextmanager
    def hf_folder(self, checkpoint: Path, work_dir: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
        from smolrecipe.backends.nanotron import convert

        path = convert.resolve_checkpoint(Path(checkpoint))  # a checkpoints folder means its latest step
        # <runs>/<recipe>/<stage>/checkpoints/<step>: the stage folder holds the settings.json
        # (recipe hash, config fingerprint) that the job wrote when it started
        settings = read_json_if_any(path.parent.parent / SETTINGS)
        provenance = {**convert.checkpoint_provenance(path), "recipe_hash": settings.get("recipe_hash"),
                      "fingerprint": settings.get("fingerprint"), "backend": self.name, "source": str(path)}
        yield convert.nanotron_to_hf(path, work_dir / "hf"), provenance


BACKEND = NanotronBackend()
