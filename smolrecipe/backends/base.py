"""The backend seam: what the stage job, evaluation and the report need from a way of training.

    prepare(recipe_path, stage, gpus, dry_run)   check the stage and write what its run needs;
                                                 None when the stage has already finished
    run(prepared, stop)                          train it: 0 when it finished, PREEMPTED when a
                                                 stop request ended it at a checkpoint
    final_checkpoint(recipe, stage, recipe_path) the stage's last checkpoint, or a UserError that
                                                 says how to train it
    owns(checkpoint)                             whether a folder is one of this backend's checkpoints
    hf_folder(checkpoint, work_dir)              that checkpoint as a transformers folder, and where
                                                 it came from (recipe, stage, step, fingerprint)

Where a backend writes its logs, summaries and checkpoints is smolrecipe.runs' business; the
report reads them from there for either backend.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smolrecipe.preemption import StopRequest
    from smolrecipe.recipe.plan import StagePlan
    from smolrecipe.recipe.schema import Recipe


@dataclass(frozen=True)
class PreparedStage:
    recipe: "Recipe"  # resolved: every path expanded
    stage: "StagePlan"
    resumes_from: str | None  # the checkpoint the run starts from (its own latest, its parent's final) or None
    command: list[str] = field(default_factory=list)  # the process a job starts, when the backend runs one
    config: Path | None = None  # the resolved engine config the run reads, when it has one

    def line(self) -> str:
        start = f"resumes from {self.resumes_from}" if self.resumes_from else "starts from scratch"
        return f"{self.stage.name}: {self.stage.train_steps:,} steps, {start}" + (f"; config {self.config}" if self.config else "")


class Backend:
    name: str

    def prepare(self, recipe_path: str, stage: str, gpus: int, dry_run: bool = False) -> PreparedStage | None:
        raise NotImplementedError

    def run(self, prepared: PreparedStage, stop: "StopRequest") -> int:
        raise NotImplementedError

    def final_checkpoint(self, recipe: "Recipe", stage: "StagePlan", recipe_path: str) -> Path:
        raise NotImplementedError

    def owns(self, checkpoint: Path) -> bool:
        raise NotImplementedError

    def hf_folder(self, checkpoint: Path, work_dir: Path) -> AbstractContextManager[tuple[Path, dict[str, Any]]]:
        raise NotImplementedError
