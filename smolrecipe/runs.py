"""The run folder: every path and file name a run writes, and the readers of those files.

    <runs>/<recipe>/                     run_dir
      <stage>/                           stage_dir: the nanotron backend's stage folder
        config.yaml                      the job's resolved nanotron config
        settings.json                    recipe hash + the stage's config fingerprint (resume checks it)
        log.jsonl                        one record per optimizer step (both backends)
        summary.json                     written last: the stage finished
        stop-request                     a job's request to stop at the end of the step
        checkpoints/<step>/, latest.txt  nanotron checkpoints; latest.txt names the newest complete one
        local/                           the local backend's stage folder: settings.json, log.jsonl,
          checkpoint-<step>/             summary.json as above; transformers checkpoints
      eval/<stage>/step-<N>/<suite>.json tools/run_eval.py's results (+ <suite>.answers.jsonl)
      samples.json                       base vs chat-model answers (tools/sample.py)
      report.md, loss.png, eval_*.png    tools/report.py

Nothing else in the project spells one of these names or parses one of these files. Paths used in
rendered configs stay strings (a recipe's `${VAR}` paths are kept unexpanded there); the readers
take real folders.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from smolrecipe.errors import UserError

if TYPE_CHECKING:  # the recipe layer sits above this module
    from smolrecipe.recipe.plan import StagePlan
    from smolrecipe.recipe.schema import Recipe

SETTINGS = "settings.json"
LOG = "log.jsonl"
SUMMARY = "summary.json"  # written last: the stage finished
CONFIG = "config.yaml"
STOP_FILE = "stop-request"
CHECKPOINTS = "checkpoints"
LATEST = "latest.txt"
EVAL_DIR = "eval"
SAMPLES = "samples.json"
REPORT = "report.md"
LOSS_PLOT = "loss.png"
# Where each backend keeps a stage's settings, log, summary and checkpoints, under the stage folder.
BACKEND_SUBDIR = {"local": "local", "nanotron": ""}
LOCAL_CHECKPOINT = "checkpoint-{step}"


# ---- paths ----------------------------------------------------------------------------------------


def run_dir(recipe: "Recipe") -> str:
    return f"{recipe.paths.runs}/{recipe.name}"


def stage_dir(recipe: "Recipe", stage: str) -> str:
    return f"{run_dir(recipe)}/{stage}"


def checkpoints_dir(recipe: "Recipe", stage: str) -> str:
    return f"{stage_dir(recipe, stage)}/{CHECKPOINTS}"


def step_checkpoint(checkpoints: str, step: int) -> str:
    """A nanotron step folder under a stage's checkpoints folder."""
    return f"{checkpoints}/{step}"


def backend_dir(recipe: "Recipe", stage: str, backend: str) -> Path:
    """The folder a backend writes a stage's settings, log, summary (and, locally, checkpoints) to."""
    sub = BACKEND_SUBDIR[backend]
    folder = Path(stage_dir(recipe, stage))
    return folder / sub if sub else folder


def local_checkpoint(folder: Path, step: int) -> Path:
    return Path(folder) / LOCAL_CHECKPOINT.format(step=step)


def local_dir(recipe: "Recipe", stage: str) -> Path:
    """The local backend's folder of a stage: settings, log, summary, checkpoint-<step>/ folders."""
    return backend_dir(recipe, stage, "local")


def local_final_checkpoint(recipe: "Recipe", stage: "StagePlan") -> Path:
    return local_checkpoint(local_dir(recipe, stage.name), stage.train_steps)


def latest_step(checkpoints: str | Path) -> int | None:
    """The step nanotron last saved under `checkpoints` (its latest.txt, written once a save is complete)."""
    latest = Path(checkpoints) / LATEST
    return int(latest.read_text().strip()) if latest.is_file() else None


def results_dir(run: Path, stage: str, step: int) -> Path:
    """Where the eval results of one checkpoint go: <run>/eval/<stage>/step-<N>/."""
    return Path(run) / EVAL_DIR / stage / f"step-{step}"


def stage_of_backend_dir(folder: Path) -> tuple[Path, str]:
    """(stage folder, backend) of a folder a backend writes a stage to."""
    folder = Path(folder)
    for backend, sub in BACKEND_SUBDIR.items():
        if sub and folder.name == sub:
            return folder.parent, backend
    return folder, "nanotron"


# ---- readers --------------------------------------------------------------------------------------


def read_json(path: Path, fix: str) -> dict:
    """A JSON object from a file; a broken file is a one-line UserError naming it."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        reason = f"{exc.msg}, line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
        raise UserError(Path(path).name, f"not valid JSON ({reason})", fix, source=str(path)) from None
    if not isinstance(data, dict):
        raise UserError(Path(path).name, f"holds a {type(data).__name__}, not a JSON object", fix, source=str(path))
    return data


def read_json_if_any(path: Path) -> dict:
    """A JSON object from a file that may be missing or cut off (provenance, settings): {} then."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_settings(folder: Path) -> dict:
    return read_json_if_any(Path(folder) / SETTINGS)


def read_log(path: Path) -> tuple[list[dict], int]:
    """The logged steps of one log.jsonl, last occurrence of each step, in step order; and how many
    lines were skipped because they are not a complete record (a write cut off by a kill)."""
    by_step: dict[int, dict] = {}
    skipped = 0
    path = Path(path)
    if not path.is_file():
        return [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            step, tokens, loss = int(record["step"]), int(record["tokens"]), float(record["loss"])
        except (ValueError, KeyError, TypeError):
            skipped += 1
            continue
        by_step.pop(step, None)  # a redone step replaces the earlier one
        by_step[step] = {**record, "step": step, "tokens": tokens, "loss": loss}
    return [by_step[s] for s in sorted(by_step)], skipped


def read_summary(folder: Path) -> dict | None:
    """A stage's summary.json (None while it has not finished)."""
    path = Path(folder) / SUMMARY
    if not path.is_file():
        return None
    return read_json(path, "rerun the stage (it resumes), or delete the file to report the stage as unfinished")


def _optional(cast, value):
    return None if value is None else cast(value)


@dataclass
class StageLog:
    """One stage's logged steps (deduplicated, in step order) and its summary, if it finished."""

    name: str
    folder: Path
    records: list[dict]
    summary: dict | None = None
    skipped_lines: int = 0  # lines that were not a complete JSON object (cut off by a kill)

    @property
    def finished(self) -> bool:
        return self.summary is not None

    @property
    def index(self) -> int | None:
        return self.summary.get("index") if self.summary else None

    def _value(self, key: str, logged: str | None = None, first: bool = False):
        """The summary's `key`; for an unfinished stage, the `logged` field of its last (or first) logged step."""
        if self.summary and self.summary.get(key) is not None:
            return self.summary[key]
        return self.records[0 if first else -1].get(logged or key) if self.records else None

    @property
    def kind(self) -> str:
        return self._value("kind") or "?"

    @property
    def tokens(self) -> int:
        """Tokens this stage trained on: the summary's total, else the last logged step's count."""
        return int(self._value("tokens") or 0)

    @property
    def steps(self) -> int:
        return int(self._value("steps", "step") or 0)

    @property
    def train_steps(self) -> int | None:
        return _optional(int, self._value("train_steps"))

    @property
    def first_loss(self) -> float | None:
        return _optional(float, self._value("first_loss", "loss", first=True))

    @property
    def final_loss(self) -> float | None:
        return _optional(float, self._value("final_loss", "loss"))

    @property
    def seconds(self) -> float | None:
        return _optional(float, self._value("seconds", "elapsed_s"))

    @property
    def tokens_per_s(self) -> float | None:
        return _optional(float, self._value("tokens_per_s"))

    @property
    def checkpoint(self) -> str | None:
        return self.summary.get("checkpoint") if self.summary else None

    @property
    def label(self) -> str:
        return self.name if self.finished else f"{self.name} (unfinished)"


def read_stage(folder: Path) -> StageLog:
    """One backend folder of a stage (see BACKEND_SUBDIR) -> its StageLog."""
    records, skipped = read_log(Path(folder) / LOG)
    summary = read_summary(folder)
    name = (summary or {}).get("stage") or (records[-1].get("stage") if records else None) or stage_of_backend_dir(folder)[0].name
    return StageLog(name=name, folder=Path(folder), records=records, summary=summary, skipped_lines=skipped)


def order_stages(stages: list[StageLog]) -> list[StageLog]:
    """Finished stages by their summary's index, then unfinished ones by folder name."""
    finished = sorted((s for s in stages if s.index is not None), key=lambda s: (s.index, s.name))
    rest = sorted((s for s in stages if s.index is None), key=lambda s: s.name)
    return finished + rest


def find_stages(run: Path) -> list[StageLog]:
    """Every stage of a run folder that logged a step or finished, with either backend, in training order."""
    run = Path(run)
    fix = "train the recipe first (tools/train_local.py, or the SLURM jobs), then pass its run folder (e.g. runs/tiny)"
    if not run.is_dir():
        raise UserError("RUN_DIR", "not a folder", fix, source=str(run))
    logs = [log for sub in BACKEND_SUBDIR.values() for log in sorted(run.glob(f"*/{sub}/{LOG}" if sub else f"*/{LOG}"))]
    stages = [read_stage(log.parent) for log in logs]
    stages = [s for s in stages if s.records or s.finished]
    if not stages:
        where = " or ".join(f"<stage>/{sub}/{LOG}" if sub else f"<stage>/{LOG}" for sub in BACKEND_SUBDIR.values())
        raise UserError("RUN_DIR", f"no training logs here (no logged step in any {where})", fix, source=str(run))
    return order_stages(stages)
