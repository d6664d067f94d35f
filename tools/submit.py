"""Submit a recipe's whole run to SLURM as a dependency chain, one job per step:

    prepare_data -> stage1 -> stage2 -> stage3 -> sft -> eval

    python tools/submit.py recipes/llama500m.yaml              # the whole chain
    python tools/submit.py recipes/llama500m.yaml --from stage2  # from stage 2 on (data and stage 1 done)
    python tools/submit.py recipes/llama500m.yaml --dry-run    # print the sbatch lines only
    SMOLRECIPE_BACKEND=local python tools/submit.py recipes/tiny.yaml   # the CPU rehearsal

Each job runs slurm/<step>.sh with the recipe's cluster settings as sbatch flags (time, partition,
account, qos, GPUs and CPUs per node) and starts only after the one before it succeeded
(--dependency=afterok). The data job is CPU-only, with `cluster.data_job`'s partition, time, CPUs
and memory. With `cluster.data_job.hub: login` (compute nodes that cannot reach the hub) there is
no data job: prepare the data on the login node first (python tools/prepare_data.py RECIPE --all,
inside tmux); the chain then starts at the first training stage, and only once every folder it
reads is prepared. Job logs go to <runs>/<recipe>/slurm/<recipe>-<step>-<jobid>.out.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runs from a checkout without install

from smolrecipe import cli  # noqa: E402
from smolrecipe.backends import backend as backend_named  # noqa: E402
from smolrecipe.errors import UserError  # noqa: E402
from smolrecipe.jobs.slurm import chain, hub_access, log_dir, submit  # noqa: E402
from smolrecipe.recipe.envpaths import resolve_recipe  # noqa: E402
from smolrecipe.recipe.loading import load_recipe  # noqa: E402
from smolrecipe.recipe.plan import build_plan  # noqa: E402


@cli.command(cli.interrupted("list them with squeue --me; scancel them, or submit the rest of the chain with --from <step>",
                             problem="jobs submitted before the interrupt stay queued"))
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", help="recipe YAML, e.g. recipes/llama500m.yaml")
    parser.add_argument("--from", dest="start", metavar="STEP", help="start the chain here (prepare_data, a stage name, or eval)")
    parser.add_argument("--dry-run", action="store_true", help="print the sbatch lines, submit nothing")
    parser.add_argument("--hub-access", metavar="STEP", help="print whether job STEP may reach the hub (online or "
                        "offline) and submit nothing: slurm/common.sh asks this (in a data job with hub: online it "
                        "also checks that the node reaches the hub)")
    args = parser.parse_args(argv)
    backend = os.environ.get("SMOLRECIPE_BACKEND", "nanotron")
    with cli.blame(args.recipe):
        backend_named(backend, field="SMOLRECIPE_BACKEND")  # a known backend, before anything is submitted
        recipe_path = Path(args.recipe).resolve()
        # Resolving the paths here checks that the environment the jobs inherit defines them.
        recipe = resolve_recipe(load_recipe(args.recipe))
        if args.hub_access:
            print(hub_access(recipe, args.hub_access, in_job=bool(os.environ.get("SLURM_JOB_ID")), recipe_arg=args.recipe))
            return 0
        stages = [s.name for s in build_plan(recipe).stages]
        jobs = chain(recipe, stages, backend, args.start, recipe_arg=args.recipe)
        if args.dry_run:
            after = None
            for job in jobs:
                print(shlex.join(job.command(recipe_path, after)))
                after = f"<{job.name}>"
            print(f"dry run: {len(jobs)} job(s) for {recipe.name} ({backend} backend), nothing submitted")
            return 0
        if shutil.which("sbatch") is None:
            raise UserError("sbatch", "not found on this machine's PATH", "run on a SLURM login node, or pass --dry-run")
        log_dir(recipe).mkdir(parents=True, exist_ok=True)
        submitted = submit(jobs, recipe_path)
    for job, job_id, command in submitted:
        print(f"{job_id:>10}  {job.name:<13} {shlex.join(command)}")
    ids = [job_id for _, job_id, _ in submitted]
    print(f"submitted {len(ids)} job(s) for {recipe.name} ({backend} backend): {' -> '.join(ids)}; "
          f"logs in {log_dir(recipe)}/; watch with: squeue --jobs={','.join(ids)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
