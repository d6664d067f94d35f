#!/usr/bin/env bash
#SBATCH --job-name=smolrecipe-prepare_data
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --signal=B:USR1@600
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out
# Data preparation for a recipe in one CPU job: every source's datatrove pipeline on this job's CPUs
# (sources and their datatrove tasks side by side, --workers = the job's CPUs: filters, dedup,
# tokenization into nanoset folders), then the SFT records. Finished sources are skipped; a job
# requeued before its time limit (or rerun) continues each source from its finished tasks, kept under
# <data>/<recipe>/.work/. (tools/prepare_data.py --executor slurm instead fans a large corpus out as
# job arrays.) It reaches the hub when the recipe's cluster.data_job.hub is online; with hub: login
# run `python tools/prepare_data.py RECIPE --all` on the login node instead (inside tmux).
#
#   sbatch slurm/prepare_data.sh [RECIPE]     RECIPE: default $SMOLRECIPE_RECIPE, else recipes/llama500m.yaml
#   bash slurm/prepare_data.sh [RECIPE]       the same on this machine, without SLURM
#
# sbatch flags override the defaults above (sbatch --time=12:00:00 slurm/prepare_data.sh ...); tools/submit.py
# sets them from the recipe's cluster.data_job section. Environment variables: see slurm/common.sh.
set -euo pipefail
job_step=prepare_data  # common.sh: the one job that may reach the hub
root=${SMOLRECIPE_ROOT:-${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}}
[[ -f $root/slurm/common.sh ]] || { echo "error: $root/slurm/common.sh not found; fix: run sbatch from the smolrecipe checkout, or export SMOLRECIPE_ROOT" >&2; exit 1; }
# shellcheck source=slurm/common.sh
source "$root/slurm/common.sh"

smolrecipe_preemptible python tools/prepare_data.py "$RECIPE" --all --workers "${SLURM_CPUS_PER_TASK:-$(nproc)}"
