"""Train one stage with nanotron: what the SLURM stage jobs run under torchrun (tools/run_stage.py
prints the exact line). See smolrecipe/nanotron_train.py for what it does and why.

    torchrun --standalone --nproc_per_node=4 tools/train_nanotron.py --config-file <runs>/<recipe>/<stage>/config.yaml
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runs from a checkout without install

from smolrecipe import cli  # noqa: E402
from smolrecipe.backends.nanotron.train import main  # noqa: E402  (installs the stop-signal handler first)

if __name__ == "__main__":  # 75 (preempted, with a checkpoint) passes through
    sys.exit(cli.run(main, cli.interrupted("run the same command again: it resumes from the newest checkpoint")))
