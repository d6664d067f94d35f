"""smolrecipe: one recipe -> data, nanotron configs, jobs and evals for a sub-billion LLaMA-style model.

recipe.py            the schema of a recipe file, and its validation
plan.py              numbers derived from a recipe (steps, dataset weights, decay, resume chain)
envpaths.py          ${VAR} paths, resolved for a job
nanotron_config.py   plan -> nanotron YAML at the pinned commit; a stage's config fingerprint
nanotron_schema.py   what that nanotron commit accepts, written down, and a checker
estimates.py         parameter count and per-GPU memory
preflight.py         the report printed before anything runs (incl. tokens needed vs prepared)
generate.py          render + write atomically + check with nanotron's parser and LR scheduler where installed

filters.py           the datatrove filters a recipe may name
datasources.py       a source -> datatrove reader; the checks run before any pipeline
data_pipeline.py     datatrove pipelines per source -> published nanoset folders + manifests
chat_tokenizer.py    the tokenizer folder: base tokenizer + the recipe's chat template
sft_data.py          chats -> nanotron's prompt/completion SFT records
corpus.py            the offline demo corpus the tiny recipe trains on
atomic.py            folders and files that appear whole or not at all

batches.py           the one data path both backends train on: blended nanoset samples, SFT rows, batches
nanotron_train.py    our nanotron entry point: nanotron's DistributedTrainer with our data, logs, stop
local_model.py       the recipe's model as a transformers LlamaForCausalLM, initialised as nanotron does
lr_schedule.py       nanotron's LR schedule as a LambdaLR
local_train.py       the local backend: the HF Trainer per stage, chained and resumable
samples.py           greedy answers of a checkpoint to fixed chat prompts
report.py            logs + eval results -> plots and report.md (eval_report.py: the eval results part)

convert.py           nanotron checkpoint <-> transformers LLaMA folder
packaged_model.py    a model shipped in a Python package (SmolLM2 GGUF) as a transformers folder
eval_tasks.py        the lighteval tasks of the tiers (tier 3, tier 4, GSM8K) and tier-2 text slices
perplexity.py        tier 2: bits per byte and token perplexity with sliding windows
sft_checks.py        tier 4: the prompt suite's deterministic checks and rates
evaluate.py          a suite on a checkpoint through lighteval -> results JSON

preemption.py        the stop request a job's SIGUSR1 sets, and the exit code that asks for a requeue
stage_job.py         what a SLURM training job runs: skip / resume / torchrun of our entry point, or the local backend
slurm_jobs.py        the recipe as a SLURM dependency chain of sbatch commands
"""

from pathlib import Path

__version__ = "0.1.0"

# The checkout: recipes/, eval/, tokenizer/ and relative paths in them are found from here.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
