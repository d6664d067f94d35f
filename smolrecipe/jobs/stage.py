"""What a SLURM training job runs for one stage (tools/run_stage.py, called by slurm/common.sh).

Every backend keeps the same contract, so the batch scripts need no backend logic of their own:
- a stage that already finished is not run again (exit 0, one line saying so);
- a stage with checkpoints of its own continues from the newest one, LR schedule and optimizer
  included (the resume chain of smolrecipe.recipe.plan.resume_interrupted);
- a stop request (SIGUSR1, forwarded by the batch script) ends the run at a checkpoint with exit
  code PREEMPTED, on which the batch script requeues the job.
How each backend does it: smolrecipe.backends.nanotron.backend, smolrecipe.backends.local.backend.
"""

from __future__ import annotations

import shlex

from smolrecipe.backends import backend
from smolrecipe.preemption import StopRequest


def run_stage_job(recipe_path: str, stage: str, backend_name: str, gpus: int, stop: StopRequest, dry_run: bool = False) -> int:
    """0 when the stage finished (now or before), PREEMPTED when a stop request checkpointed it."""
    chosen = backend(backend_name)
    prepared = chosen.prepare(recipe_path, stage, gpus, dry_run=dry_run)
    if prepared is None:
        print(f"{stage}: already finished ({chosen.name} checkpoint at its last step); nothing to run")
        return 0
    if prepared.command:
        print(prepared.line())
        print(shlex.join(prepared.command), flush=True)
    if dry_run:
        return 0
    return chosen.run(prepared, stop)
