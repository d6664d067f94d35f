"""smolrecipe: one recipe -> data, nanotron configs, jobs and evals for a sub-billion LLaMA-style model.

The flow, one package per step; a package imports only the ones before it (make lint checks it):

  errors, runs, preemption, atomic   one error type; the run folder's paths and readers; stop requests; atomic writes
  recipe/     the recipe: schema (stages as kinds), loading, plan (every derived number), paths, estimates
  data/       sources -> nanoset folders (datatrove), chat records, the tokenizer folder, training batches
  kinds/      what differs per kind of stage (pretrain, sft): configs, rows, data preparation, evals
  backends/   nanotron (cluster) and local (transformers) behind one interface; conversion; LR schedule
  eval/       suites on a checkpoint through lighteval -> results JSON
  report/     the preflight report, and a run's logs + eval results -> plots and report.md
  jobs/       the SLURM chain, and what one stage's job runs
"""

from pathlib import Path

__version__ = "0.1.0"

# The checkout: recipes/, eval/, tokenizer/ and relative paths in them are found from here.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def without_checkout(text: str) -> str:
    """`text` with the checkout's absolute path taken out of every path in it: fingerprints of
    resolved settings stay the same wherever the checkout is (and equal those made before relative
    recipe paths were resolved against it)."""
    return text.replace(f"{PROJECT_ROOT}/", "")


def shown_path(path: str | Path) -> str:
    """A path as people read it (config headers, reports): relative to the checkout when it is in
    it, so the same run reads the same from wherever it was started."""
    given = Path(path)
    absolute = given.parent.resolve() / given.name
    return absolute.relative_to(PROJECT_ROOT).as_posix() if absolute.is_relative_to(PROJECT_ROOT) else str(path)
