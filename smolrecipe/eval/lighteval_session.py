"""What we change in lighteval (pinned to a minor release in pyproject.toml), in one place.

- its task registry imports every built-in task module, and one of them downloads a file from
  GitHub at import time, which fails on offline compute nodes: we register only our own tasks;
- its transformers backend turns autograd off for the whole process; we restore the mode;
- it warns on every run of ours about things that do not apply; those lines are dropped;
- it would wrap our already-rendered prompts in the chat template a second time.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from unittest import mock


@contextmanager
def lighteval_session() -> Iterator[None]:
    """Where lighteval's pipeline is imported and run, undoing two of its global effects:
    - its Registry imports every built-in task module (one downloads from GitHub at import time);
      ours are passed as a module, so only those are registered;
    - its transformers backend turns autograd off for the whole process (at import and again when
      it loads a model); training in the same process afterwards would fail, so the mode is restored.
    """
    import torch

    grad = torch.is_grad_enabled()
    loggers = [logging.getLogger(name) for name in MISLEADING_WARNINGS]
    for logger in loggers:
        logger.addFilter(_drop_misleading_warnings)
    try:
        from lighteval.tasks.registry import Registry

        def load(custom_tasks=None, load_multilingual=False):
            return Registry._extract_configs(Registry.create_custom_tasks_module(custom_tasks))

        with mock.patch.object(Registry, "load_all_task_configs", staticmethod(load)):
            yield
    finally:
        torch.set_grad_enabled(grad)
        for logger in loggers:
            logger.removeFilter(_drop_misleading_warnings)


# Warnings lighteval prints on every run of ours that do not apply: our tasks are zero-shot (no
# few-shot examples are drawn, from any split), and a --limit is deliberate and recorded in the results.
MISLEADING_WARNINGS = {
    "lighteval.tasks.lighteval_task": "Careful, the task",
    "lighteval.pipeline": "--max_samples WAS SET",
}


def _drop_misleading_warnings(record: logging.LogRecord) -> bool:
    return not any(str(record.msg).startswith(prefix) for prefix in MISLEADING_WARNINGS.values())


def lighteval_model_config(hf_dir: Path, batch_size: int, cache_dir: Path):
    import torch
    from lighteval.models.transformers.transformers_model import TransformersModelConfig

    cuda = torch.cuda.is_available()
    # Our prompts are rendered by the tasks themselves (the chat template where a task wants
    # one), so lighteval must not wrap them in the template a second time.
    return TransformersModelConfig(
        model_name=str(hf_dir), device="cuda" if cuda else "cpu", dtype="bfloat16" if cuda else "float32",
        batch_size=batch_size, override_chat_template=False, cache_dir=str(cache_dir),
    )
