#!/usr/bin/env bash
#SBATCH --job-name=smolrecipe-eval
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=48:00:00
#SBATCH --signal=B:USR1@600
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out
# Evaluation of a recipe: each stage's final checkpoint with the suites the recipe lists for it
# (lighteval on one GPU; nanotron checkpoints are converted on the fly). Results already there for
# the same checkpoint are kept.
#
#   sbatch slurm/eval.sh [RECIPE]     RECIPE: default $SMOLRECIPE_RECIPE, else recipes/llama500m.yaml
#   bash slurm/eval.sh [RECIPE]       the same on this machine, without SLURM
#
# sbatch flags override the defaults above (sbatch --time=12:00:00 slurm/eval.sh ...); tools/submit.py
# sets them from the recipe's cluster section. Environment variables: see slurm/common.sh.
set -euo pipefail
root=${SMOLRECIPE_ROOT:-${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}}
[[ -f $root/slurm/common.sh ]] || { echo "error: $root/slurm/common.sh not found; fix: run sbatch from the smolrecipe checkout, or export SMOLRECIPE_ROOT" >&2; exit 1; }
# shellcheck source=slurm/common.sh
source "$root/slurm/common.sh"

smolrecipe_preemptible python tools/run_eval.py --recipe "$RECIPE" --backend "$BACKEND"
