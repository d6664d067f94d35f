"""The local backend: transformers' Trainer on this machine (the CPU rehearsal, or one GPU).

Checkpoints are transformers folders, `<runs>/<recipe>/<stage>/local/checkpoint-<step>/`, so a
local checkpoint is already what evaluation loads; any other transformers folder (an export, a
converted nanotron checkpoint) is read the same way, without run provenance.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from smolrecipe import runs
from smolrecipe.backends.base import Backend, PreparedStage
from smolrecipe.data.verify import verify_stage_data
from smolrecipe.errors import UserError
from smolrecipe.preemption import PREEMPTED, StopRequest
from smolrecipe.recipe.envpaths import resolve_recipe
from smolrecipe.recipe.loading import load_recipe
from smolrecipe.recipe.plan import StagePlan, build_plan
from smolrecipe.recipe.schema import Recipe


def run_provenance(hf_dir: Path) -> dict[str, Any]:
    """What a local-backend checkpoint (`<runs>/<recipe>/<stage>/local/checkpoint-<N>`) was trained on;
    {} for a transformers folder that is not one."""
    folder = hf_dir.parent
    summary = runs.read_json_if_any(folder / runs.SUMMARY)
    settings = runs.read_settings(folder)
    trainer = runs.read_json_if_any(hf_dir / "trainer_state.json")
    step = trainer.get("global_step")
    tokens = kind = None
    if step is not None:
        for record in runs.read_log(folder / runs.LOG)[0]:
            if record.get("step") == step:
                tokens, kind = record.get("tokens"), record.get("kind")
    if not (summary or settings or trainer):
        return {}
    stage_dir, backend = runs.stage_of_backend_dir(folder)  # nanotron: a TRL-trained stage's folder on the cluster
    return {
        "recipe": stage_dir.parent.name if (summary or settings) else None,
        "stage": summary.get("stage") or settings.get("stage"),
        "stage_index": summary.get("index"),
        "kind": summary.get("kind") or kind,
        "step": step,
        "tokens_seen": tokens,
        "recipe_hash": summary.get("recipe_hash") or settings.get("recipe_hash"),
        "fingerprint": summary.get("fingerprint") or settings.get("fingerprint"),
        "backend": backend,
    }


class LocalBackend(Backend):
    name = "local"

    def prepare(self, recipe_path: str, name: str, gpus: int, dry_run: bool = False) -> PreparedStage | None:
        """Checks the stage name, the folders it reads (against their manifests) and the model's
        vocabulary (against the tokenizer folder); whether it finished, resumes or starts is the
        trainer's to say (it also refuses checkpoints made under other settings), when it runs."""
        recipe = resolve_recipe(load_recipe(recipe_path))
        plan = build_plan(recipe)
        stage = plan.checked_stage(name)
        verify_stage_data(recipe, stage, recipe_path)
        parent = str(runs.local_final_checkpoint(recipe, plan.stage(stage.init_from))) if stage.init_from else None
        return PreparedStage(recipe, stage, resumes_from=parent)

    def run(self, prepared: PreparedStage, stop: StopRequest) -> int:
        from smolrecipe.backends.local.train import run_stage  # torch and transformers load only for this backend

        result = run_stage(prepared.recipe, build_plan(prepared.recipe), prepared.stage.name, resume=True, stop=stop)
        print(result.line(), flush=True)
        return PREEMPTED if result.stopped else 0

    def final_checkpoint(self, recipe: Recipe, stage: StagePlan, recipe_path: str) -> Path:
        folder = runs.local_final_checkpoint(recipe, stage)
        if not folder.is_dir():
            raise UserError(stage.name, f"{folder} does not exist",
                            f"train it first: python tools/train_local.py {recipe_path} --stage {stage.name}")
        return folder

    def owns(self, checkpoint: Path) -> bool:
        return (Path(checkpoint) / "config.json").is_file()

    @contextmanager
    def hf_folder(self, checkpoint: Path, work_dir: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
        yield Path(checkpoint), run_provenance(Path(checkpoint)) | {"source": str(checkpoint)}


BACKEND = LocalBackend()
