"""smolrecipe: one recipe -> data, nanotron configs, jobs and evals for a sub-billion LLaMA-style model.

recipe.py            the schema of a recipe file, and its validation
plan.py              numbers derived from a recipe (steps, dataset weights, decay, resume chain)
envpaths.py          ${VAR} paths, resolved for a job
nanotron_config.py   plan -> nanotron YAML at the pinned commit
nanotron_schema.py   what that nanotron commit accepts, written down, and a checker
estimates.py         parameter count and per-GPU memory
preflight.py         the report printed before anything runs (incl. tokens needed vs prepared)
generate.py          render + write atomically + check with nanotron where installed

filters.py           the datatrove filters a recipe may name
datasources.py       a source -> datatrove reader; the checks run before any pipeline
data_pipeline.py     datatrove pipelines per source -> published nanoset folders + manifests
chat_tokenizer.py    the tokenizer folder: base tokenizer + the recipe's chat template
sft_data.py          chats -> nanotron's prompt/completion SFT records
corpus.py            the offline demo corpus the tiny recipe trains on
atomic.py            folders that appear whole or not at all
"""

__version__ = "0.1.0"
