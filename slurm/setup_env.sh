#!/usr/bin/env bash
# The cluster environment, built once on a login node (it needs internet; compute nodes do not):
# a virtualenv with PyTorch for the node's CUDA, nanotron at the commit the generated configs are
# checked against, flash-attn, and smolrecipe with datatrove, lighteval and the rest of its
# dependencies. It records in <venv>/nanotron.env where nanotron's run_train.py is (the stage jobs
# launch it), then loads every recipe's configs with nanotron's own parser (make_config.py --check).
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
NANOTRON_COMMIT=$(sed -n 's/^NANOTRON_COMMIT = "\([0-9a-f]*\)"$/\1/p' "$ROOT/smolrecipe/nanotron_config.py")
[[ -n $NANOTRON_COMMIT ]] || { echo "error: no NANOTRON_COMMIT in smolrecipe/nanotron_config.py" >&2; exit 1; }
NANOTRON_DATATROVE=2c895af7a95010a96fa53e2dc77cc0ce92799e3f  # head of datatrove's nouamane/avoid-s3 (2025-04-10)

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
pip install --quiet dacite torchtyping
# nanotron's Nanoset calls DatatroveFolderDataset(folder_path=..., eos_token_id=...), an API that
# only datatrove's branch nouamane/avoid-s3 has (no release does; ours, for data prep, is 0.10).
# That datatrove goes to its own folder, put first on PYTHONPATH for the training processes only.
rm -rf "$VENV/nanotron-datatrove"
pip install --quiet --no-deps --target "$VENV/nanotron-datatrove" "datatrove @ git+https://github.com/huggingface/datatrove@$NANOTRON_DATATROVE"

step "flash-attn (a prebuilt wheel for this torch, CUDA and Python where one exists, else a long compile)"
pip install --quiet "flash-attn>=2.5.0,<2.7.0" --no-build-isolation

# What the stage jobs read (slurm/common.sh): where run_train.py is, and nanotron's datatrove.
cat >"$VENV/nanotron.env.tmp" <<ENV
NANOTRON_RUN_TRAIN=$NANOTRON_DIR/run_train.py
NANOTRON_PYTHONPATH=$VENV/nanotron-datatrove
ENV
mv "$VENV/nanotron.env.tmp" "$VENV/nanotron.env"

step "checks"
python -c "import torch, nanotron, flash_attn, datatrove, lighteval; print('torch', torch.__version__, 'CUDA', torch.version.cuda, '| flash-attn', flash_attn.__version__)"
for recipe in "$ROOT"/recipes/*.yaml; do
  # Stages whose data is not prepared yet are reported, not parsed (nanotron reads the data's tokenizer).
  python "$ROOT/tools/make_config.py" "$recipe" --check --quiet --out "$(mktemp -d)"
done
echo
echo "environment ready: $VENV (nanotron's run_train.py: $NANOTRON_DIR/run_train.py)"
[[ $VENV == "$ROOT/.venv" ]] || echo "jobs must see it: export SMOLRECIPE_VENV=$VENV before sbatch (sbatch passes your environment on)"
