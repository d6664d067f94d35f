"""Test helper, run under torchrun with tests/engine_cpu on PYTHONPATH: the first N micro-batches our
nanotron entry point feeds this rank (its own dataloader: nanotron's sampler and collator over our
samples), saved to <out>-rank<R>.npz for tests/test_engine.py to compare with the local backend's.

    torchrun --standalone --nproc_per_node=2 tests/engine_cpu/dump_batches.py CONFIG OUT N
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout

import numpy as np  # noqa: E402
from nanotron import distributed as dist  # noqa: E402

from smolrecipe.backends.nanotron.train import STOP, StageTrainer  # noqa: E402
from smolrecipe.data.batches import ENGINE_KEYS  # noqa: E402

config, out, count = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
trainer = StageTrainer(config, out.parent, STOP)
batches = iter(trainer.dataloader())
arrays = {}
for i in range(count):
    batch = next(batches)
    arrays.update({f"{key}_{i}": np.asarray(batch[key]) for key in ENGINE_KEYS})
np.savez(f"{out}-rank{dist.get_rank(trainer.parallel_context.dp_pg)}.npz", **arrays)
dist.destroy_process_group()
