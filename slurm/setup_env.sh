#!/usr/bin/env bash
# The cluster environment, built once on a login node (it needs internet; compute nodes do not):
# a virtualenv with PyTorch for the node's CUDA, nanotron at the commit the generated configs are
# checked against, flash-attn, and smolrecipe with datatrove, lighteval and the rest of its
# dependencies. The stage jobs train with our entry point (tools/train_nanotron.py) on nanotron's
# trainer; the script ends with the engine checks of make_config.py --check on every recipe
# (nanotron's parser on every config, its LR scheduler against ours).
#
#   bash slurm/setup_env.sh                                   # <checkout>/.venv, CUDA 12.4 wheels
#   TORCH_CUDA=cu118 bash slurm/setup_env.sh                  # an older driver
#   SMOLRECIPE_VENV=$SCRATCH/venvs/smolrecipe bash slurm/setup_env.sh   # the jobs need the same SMOLRECIPE_VENV
#
# Environment: SMOLRECIPE_VENV (default <checkout>/.venv), PYTHON (default python3, 3.10 or 3.11),
# TORCH_VERSION (default 2.4.1), TORCH_CUDA (default cu124; cu118/cu121/cu124 have wheels for it),
# NANOTRON_DIR (default $SMOLRECIPE_VENV/src/nanotron). Rerunning it updates the environment.
set -euo pipefail

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"
  exit 0
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${SMOLRECIPE_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.4.1}
TORCH_CUDA=${TORCH_CUDA:-cu124}
NANOTRON_DIR=${NANOTRON_DIR:-$VENV/src/nanotron}
# The commit tests/test_nanotron_conformance.py checks the generated configs against.
NANOTRON_COMMIT=$(sed -n 's/^NANOTRON_COMMIT = "\([0-9a-f]*\)"$/\1/p' "$ROOT/smolrecipe/backends/nanotron/config.py")
[[ -n $NANOTRON_COMMIT ]] || { echo "error: no NANOTRON_COMMIT in smolrecipe/backends/nanotron/config.py" >&2; exit 1; }

step() { echo; echo "== $*"; }

step "virtualenv $VENV ($("$PYTHON" --version))"
"$PYTHON" -m venv "$VENV"
# shellcheck source=/dev/null
source "$VENV/bin/activate"
pip install --quiet --upgrade pip wheel setuptools packaging ninja

step "PyTorch $TORCH_VERSION for CUDA ${TORCH_CUDA#cu}"
pip install --quiet "torch==$TORCH_VERSION" --index-url "https://download.pytorch.org/whl/$TORCH_CUDA"

step "smolrecipe with datatrove, lighteval, transformers, TRL (the torch above is kept)"
pip install --quiet -e "$ROOT"

step "nanotron at $NANOTRON_COMMIT"
if [[ ! -d $NANOTRON_DIR/.git ]]; then
  git clone --quiet https://github.com/huggingface/nanotron "$NANOTRON_DIR"
fi
git -C "$NANOTRON_DIR" fetch --quiet origin "$NANOTRON_COMMIT"
git -C "$NANOTRON_DIR" checkout --quiet "$NANOTRON_COMMIT"
# Without its pins: nanotron asks for numpy<2, while datatrove and lighteval need numpy>=2; its code
# uses none of what NumPy 2 removed. Its other run-time dependencies are installed by name.
pip install --quiet --no-deps -e "$NANOTRON_DIR"
# What its modules import on our path (the same list the Makefile installs for the CPU checks).
# Its Nanoset's datatrove API (nouamane/avoid-s3) is not needed: our entry point reads the nanoset
# folders with the datatrove release smolrecipe depends on (smolrecipe.data.batches).
pip install --quiet dacite einops numba
# nanotron.nn.moe imports grouped_gemm at module level and every nanotron model imports it (MoE or not).
pip install --quiet --no-build-isolation "grouped_gemm @ git+https://github.com/fanshiqing/grouped_gemm@main"

step "flash-attn (a prebuilt wheel for this torch, CUDA and Python where one exists, else a long compile)"
pip install --quiet "flash-attn>=2.5.0,<2.7.0" --no-build-isolation

step "checks"
python -c "import torch, nanotron.trainer, flash_attn, datatrove, lighteval; print('torch', torch.__version__, 'CUDA', torch.version.cuda, '| flash-attn', flash_attn.__version__)"
for recipe in "$ROOT"/recipes/*.yaml; do
  # Stages whose data is not prepared yet are reported, not parsed (nanotron reads the data's tokenizer).
  python "$ROOT/tools/make_config.py" "$recipe" --check --quiet --out "$(mktemp -d)"
done
echo
echo "environment ready: $VENV (nanotron at $NANOTRON_DIR; the jobs run tools/train_nanotron.py)"
[[ $VENV == "$ROOT/.venv" ]] || echo "jobs must see it: export SMOLRECIPE_VENV=$VENV before sbatch (sbatch passes your environment on)"
