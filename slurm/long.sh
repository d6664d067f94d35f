#!/usr/bin/env bash
#SBATCH --job-name=smolrecipe-long
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=32
#SBATCH --time=48:00:00
#SBATCH --signal=B:USR1@600
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out
# Context extension (stage `long`, kind long_context) of a recipe on one node: nanotron through torchrun, one process per GPU.
#
#   sbatch slurm/long.sh [RECIPE]     RECIPE: default $SMOLRECIPE_RECIPE, else recipes/llama500m.yaml
#   bash slurm/long.sh [RECIPE]       the same on this machine, without SLURM
#   SMOLRECIPE_BACKEND=local sbatch --gpus-per-node=0 slurm/long.sh recipes/tiny.yaml   CPU rehearsal
#
# A finished stage is not run again; an interrupted one resumes from its newest checkpoint. SLURM
# sends SIGUSR1 10 minutes before the time limit: the job checkpoints and requeues itself.
#
# sbatch flags override the defaults above (sbatch --time=12:00:00 slurm/long.sh ...); tools/submit.py
# sets them from the recipe's cluster section. Environment variables: see slurm/common.sh.
set -euo pipefail
root=${SMOLRECIPE_ROOT:-${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}}
[[ -f $root/slurm/common.sh ]] || { echo "error: $root/slurm/common.sh not found; fix: run sbatch from the smolrecipe checkout, or export SMOLRECIPE_ROOT" >&2; exit 1; }
# shellcheck source=slurm/common.sh
source "$root/slurm/common.sh"

smolrecipe_train long
