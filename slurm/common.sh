# shellcheck shell=bash
# Sourced by every job script in slurm/ (stage1.sh ... eval.sh); not run on its own. It finds the
# checkout, activates its environment, sets what compute nodes need, and defines the helpers the
# scripts call. Nothing here names a user path: everything comes from the environment.
#
# Environment (all optional):
#   SMOLRECIPE_RECIPE    recipe YAML (default recipes/llama500m.yaml); a script's first argument wins
#   SMOLRECIPE_BACKEND   nanotron (default) | local: the CPU rehearsal, the local backend in the same scripts
#   SMOLRECIPE_ROOT      the checkout (default: the directory sbatch was run from)
#   SMOLRECIPE_VENV      its virtualenv (default <checkout>/.venv: slurm/setup_env.sh, or make install)
#   SMOLRECIPE_ONLINE=1  let every job reach the hub and wandb (default: offline, as compute nodes usually are,
#                        except the data job of a recipe whose cluster.data_job.hub is online)
#   HF_HOME              the Hugging Face cache and login token (default ~/.cache/huggingface): set it the same
#                        on the login node and for the jobs (sbatch passes it on), so that they share one cache

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  # The calling script's header: its comment lines after the #SBATCH block.
  sed -n '/^#SBATCH/d; 2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"
  exit 0
fi

smolrecipe_die() { echo "error: $*" >&2; exit 1; }

ROOT=$(cd "${SMOLRECIPE_ROOT:-${SLURM_SUBMIT_DIR:-.}}" && pwd)
cd "$ROOT" || exit 1
RECIPE=${1:-${SMOLRECIPE_RECIPE:-recipes/llama500m.yaml}}
BACKEND=${SMOLRECIPE_BACKEND:-nanotron}
VENV=${SMOLRECIPE_VENV:-$ROOT/.venv}

[[ -f $RECIPE ]] || smolrecipe_die "recipe $RECIPE not found (from $ROOT); fix: pass an existing recipe, e.g. sbatch slurm/stage1.sh recipes/llama500m.yaml"
[[ $BACKEND == nanotron || $BACKEND == local ]] || smolrecipe_die "SMOLRECIPE_BACKEND=$BACKEND; fix: use nanotron or local"
[[ -f $VENV/bin/activate ]] || smolrecipe_die "no virtualenv at $VENV; fix: run slurm/setup_env.sh (cluster) or make install (CPU), or export SMOLRECIPE_VENV"
# shellcheck source=/dev/null
source "$VENV/bin/activate"

# nanotron's tensor-parallel overlap relies on kernels being queued in issue order.
export CUDA_DEVICE_MAX_CONNECTIONS=1
# Training and eval jobs run offline. The data job (prepare_data.sh sets job_step) asks the recipe:
# with cluster.data_job.hub: online it streams from the hub (after checking, in a job, that the node
# reaches it); with hub: login the data was prepared on the login node and the job stays offline.
# HF_HOME is left as sbatch passed it on, so jobs and the login node share one cache and token.
hub=offline
if [[ ${SMOLRECIPE_ONLINE:-0} == 1 ]]; then
  hub=online
elif [[ ${job_step:-} == prepare_data ]]; then
  hub=$(python tools/submit.py "$RECIPE" --hub-access prepare_data) || exit 1  # its error line is on stderr
fi
if [[ $hub != online ]]; then
  # Compute nodes without internet: tokenizers, models and datasets from local folders or the HF
  # cache only (a hub lookup would hang until it times out), wandb logs kept for `wandb sync`.
  export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline
fi
if [[ $BACKEND == local ]]; then
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-$(nproc)}}
fi
GPUS=${SLURM_GPUS_ON_NODE:-$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU' || true)}

echo "smolrecipe $(basename "${SLURM_JOB_NAME:-$0}" .sh): recipe $RECIPE, backend $BACKEND, ${GPUS} GPU(s), hub $hub," \
  "job ${SLURM_JOB_ID:-none} (restart ${SLURM_RESTART_COUNT:-0}) on $(hostname) at $(date -Is)"

# Run a command, passing SLURM's warning signal (sbatch --signal=B:USR1@...) on to it; when it
# stopped at a checkpoint (exit 75) or was cut short by the signal, requeue this job so that it
# resumes there. The command runs in the background because bash runs a trap only between commands.
smolrecipe_preemptible() {
  local child rc signalled=0
  "$@" &
  child=$!
  trap 'signalled=1; echo "smolrecipe: SIGUSR1 at $(date -Is): checkpointing before the time limit"; kill -USR1 "$child" 2>/dev/null || true' USR1
  while :; do
    rc=0
    wait "$child" || rc=$?
    kill -0 "$child" 2>/dev/null || break  # still running: wait was cut short by the trap
  done
  trap - USR1
  if (( rc == 75 || (signalled && rc != 0) )); then
    if [[ -n ${SLURM_JOB_ID:-} ]]; then
      echo "smolrecipe: stopped at a checkpoint; requeueing job $SLURM_JOB_ID, which resumes from it"
      scontrol requeue "$SLURM_JOB_ID"
      sleep 120  # scontrol requeue ends this job; never report it finished
    fi
    echo "smolrecipe: stopped at a checkpoint; run the same script again to resume"
  fi
  return "$rc"
}

# Train one stage of the recipe (tools/run_stage.py: skips a finished stage, resumes an interrupted one).
smolrecipe_train() {
  smolrecipe_preemptible python tools/run_stage.py "$RECIPE" "$1" --backend "$BACKEND" --gpus "$GPUS"
}
