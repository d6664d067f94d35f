"""smolrecipe: one recipe -> data, nanotron configs, jobs and evals for a sub-billion LLaMA-style model.

recipe.py            the schema of a recipe file, and its validation
plan.py              numbers derived from a recipe (steps, dataset weights, decay, resume chain)
envpaths.py          ${VAR} paths, resolved for a job
nanotron_config.py   plan -> nanotron YAML at the pinned commit
nanotron_schema.py   what that nanotron commit accepts, written down, and a checker
estimates.py         parameter count and per-GPU memory
preflight.py         the report printed before anything runs
generate.py          render + write atomically + check with nanotron where installed
"""

__version__ = "0.1.0"
