"""Recipe sources -> nanoset folders, with datatrove.

Per source, one readable list of datatrove steps:

    read -> the source's filters -> tokenize                                (dedup off)
    read -> filters -> minhash signatures | buckets | clusters | read -> filters -> minhash filter -> tokenize

run by datatrove's LocalPipelineExecutor on one machine or SlurmPipelineExecutor on a cluster,
then published: the tokenized files move from the source's work folder to
`<paths.data>/<recipe>/<source>/` together with a `manifest.json` (documents read, kept, removed
per filter, duplicates removed, tokens, files, tokenizer, recipe hash). A nanoset folder
therefore exists only when it is complete; until then everything lives under
`<paths.data>/<recipe>/.work/<source>-<fingerprint>b<budget>/`, where datatrove's completion
markers let a killed run resume without redoing finished tasks. The fingerprint covers everything
that changes the output (source settings, tokenizer, seed, task count), so a changed source starts
afresh and an unchanged one is not rebuilt; a folder that holds at least the token budget (or the
whole source) serves it, so a smaller budget reuses it and only a larger one prepares it again.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from datatrove.executor import LocalPipelineExecutor, SlurmPipelineExecutor
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.tokens import DocumentTokenizer

from smolrecipe import without_checkout
from smolrecipe.atomic import replace_folder, write_json
from smolrecipe.data.sources import EXCUSED_LOSSES, LOST_PREFIX, build_filters, build_reader
from smolrecipe.data.tokenizer import PROVENANCE, tokenizer_entries
from smolrecipe.data.verify import MANIFEST, read_manifest, verify_source_folder
from smolrecipe.errors import UserError
from smolrecipe.recipe.budgets import CAP_TOLERANCE
from smolrecipe.recipe.plan import source_folder
from smolrecipe.recipe.schema import Recipe, Source

WORK = ".work"
Executor = Literal["local", "slurm"]

# MinHash settings: datatrove's defaults (5-grams, 14 buckets x 8 hashes, 64-bit) flag pairs
# above ~0.75 Jaccard similarity, the setting FineWeb used.
MINHASH_BUCKETS = 14
MINHASH_HASHES_PER_BUCKET = 8


def document_tokenizer(folder: str, document_end: str):
    """The folder's fast tokenizer, encoding a document as its text then the document-end token (no BOS)."""
    from tokenizers import Tokenizer
    from tokenizers.processors import TemplateProcessing

    tokenizer = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    tokenizer.post_processor = TemplateProcessing(
        single="$A <EOS>", special_tokens=[("<EOS>", tokenizer.token_to_id(document_end))], pair=None)
    return tokenizer


class NanosetTokenizer(DocumentTokenizer):
    """datatrove's DocumentTokenizer, reading the recipe's tokenizer *folder*.

    The name a tokenizer step holds is what datatrove writes into each `.metadata` file, and
    nanotron passes it to AutoTokenizer.from_pretrained, which needs a folder (or hub id). datatrove
    itself loads a local tokenizer only from a tokenizer.json file path. So the folder is the name,
    and the file inside it is what we load. Each task also shuffles with its own seed (seed, rank),
    so a task's output does not depend on which tasks ran before it in the same process.
    """

    def __init__(self, output_folder: str, tokenizer_folder: str, document_end: str, seed: int,
                 budget: int | None = None, **kwargs):
        super().__init__(output_folder, tokenizer_name_or_path=tokenizer_folder, eos_token=document_end, seed=seed, **kwargs)
        self.base_seed = seed
        self.budget = budget  # tokens for all tasks together; None reads the source to its end

    @cached_property
    def tokenizer(self):
        return document_tokenizer(self.tokenizer_name_or_path, self.eos_token)

    def run(self, data, rank: int = 0, world_size: int = 1):
        import numpy as np

        self.rand = np.random.default_rng([self.base_seed, rank])
        if self.budget is not None:
            data = self.within_budget(data, task_budget(self.budget, rank, world_size))
        return super().run(data, rank, world_size)

    def within_budget(self, data, budget: int):
        """Pass documents on until their tokens reach `budget`, then stop reading.

        The tokenizer counts a batch's tokens only after encoding the whole batch, so the documents
        of the batch being filled are estimated from their characters, at a tokens-per-character
        rate: that of the batches finished so far, or, before the first one is, that of a sample
        counted here exactly (encoded once more: the first CAP_SAMPLE_DOCUMENTS documents, and more
        until they hold CAP_SAMPLE_SHARE of the budget). A budget the first batch is likely to reach
        (a small task) is counted exactly to its end instead, since a rate from a few dozen
        documents can miss it by a few percent. bench/prepare_data.py measures what this costs.
        """
        counted = counted_chars = pending_chars = sample_tokens = sample_chars = sampled = 0
        for document in data:
            total = int(self.stats["tokens"].total)
            if total > counted:  # a batch has been encoded: every document passed so far is counted
                counted, counted_chars, pending_chars = total, counted_chars + pending_chars, 0
            small = sampled and self.batch_size * sample_tokens / sampled >= budget / 2
            if not counted_chars and (sampled < CAP_SAMPLE_DOCUMENTS or sample_tokens < CAP_SAMPLE_SHARE * budget or small):
                tokens = len(self.tokenizer.encode(document.text).ids)
                if sampled and closer_without(sample_tokens, tokens, budget):
                    break
                sample_tokens, sample_chars, sampled = sample_tokens + tokens, sample_chars + len(document.text), sampled + 1
                pending_chars += len(document.text)
                yield document
                continue
            rate = counted / counted_chars if counted_chars else sample_tokens / sample_chars
            if closer_without(counted + pending_chars * rate, len(document.text) * rate, budget):
                break
            pending_chars += len(document.text)
            yield document
        else:
            return  # the input ran out first
        self.stat_update("budget_reached")


def closer_without(tokens: float, more: float, budget: int) -> bool:
    """Whether stopping at `tokens` lands nearer the budget than adding a document of `more` would
    (so that many small tasks do not all fall short, or all overshoot, by part of a document)."""
    return tokens + more - budget > budget - tokens


CAP_SAMPLE_DOCUMENTS = 64
CAP_SAMPLE_SHARE = 0.02


# A deduplicated source computes MinHash signatures in a pipeline of its own before tokenizing; that
# pass reads this much more than the budget, so that the duplicates it finds and the tokenizing pass
# removes still leave a full budget. A source with more duplicates than this tokenizes a tail that
# the signatures never saw (kept without dedup).
DEDUP_HEADROOM = 1.25


class TokenBudget(PipelineStep):
    """Pass documents on until `budget` tokens (this task's share) have gone by, counting each
    document exactly with the recipe's tokenizer: the cap of the MinHash signature pass, which has
    no tokenizer of its own to count with."""

    name = "🪙 token budget"
    type = "smolrecipe"

    def __init__(self, tokenizer_folder: str, document_end: str, budget: int):
        super().__init__()
        self.tokenizer_folder, self.document_end, self.budget = tokenizer_folder, document_end, budget

    @cached_property
    def tokenizer(self):
        return document_tokenizer(self.tokenizer_folder, self.document_end)

    def run(self, data, rank: int = 0, world_size: int = 1):
        budget, seen = task_budget(self.budget, rank, world_size), 0
        for document in data:
            if seen >= budget:
                self.stat_update("budget_reached")
                return
            seen += len(self.tokenizer.encode(document.text).ids)
            yield document


def task_budget(budget: int, rank: int, world_size: int) -> int:
    """A task's share of a source's budget (the remainder goes to the first tasks)."""
    share, extra = divmod(budget, world_size)
    return share + (rank < extra)


@dataclass(frozen=True)
class SourceJob:
    """Where one source's pipeline reads, works and publishes."""

    name: str
    source: Source  # paths resolved
    final: Path
    work: Path
    fingerprint: str
    tasks: int
    budget: int | None = None  # tokens to keep; None: the whole source

    @property
    def lost_notes(self) -> Path:  # the readers' first bad file and line per reason and task
        return self.work / "lost"

    @property
    def staged(self) -> Path:  # datatrove's tokenizer output, moved to `final` when complete
        return self.work / "nanoset"

    def logs(self, step: str) -> Path:
        return self.work / "logs" / step


def tokenizer_folder(recipe: Recipe) -> str:
    """The tokenizer name written into every `.metadata`: the recipe's resolved path, verbatim,
    because nanotron asserts it equals the config's tokenizer_name_or_path string."""
    return recipe.tokenizer.path


def document_end_token(recipe: Recipe, tokenizer) -> str:
    """The token appended after every pretraining document."""
    if recipe.tokenizer.document_end is not None:
        if tokenizer.token_to_id(recipe.tokenizer.document_end) is None:
            raise UserError("tokenizer.document_end", f"'{recipe.tokenizer.document_end}' is not a token of the tokenizer",
                              "use a special token of the tokenizer, e.g. its end-of-text token")
        return recipe.tokenizer.document_end
    return tokenizer.id_to_token(recipe.tokenizer.eos_token_id)


def fingerprint(recipe: Recipe, **settings: Any) -> str:
    """Hash of everything that determines an output: `settings` plus the tokenizer folder's identity."""
    tok = Path(tokenizer_folder(recipe))
    provenance = (tok / PROVENANCE).read_text() if (tok / PROVENANCE).is_file() else ""
    key = {**settings, "tokenizer": [str(tok), provenance, recipe.tokenizer.document_end]}
    return hashlib.sha256(without_checkout(json.dumps(key, sort_keys=True, default=str)).encode()).hexdigest()[:12]


# Source fields that do not change what is tokenized (the budget they set is in the work folder's name).
NOT_IN_FINGERPRINT = {"card", "gated", "license", "max_lost_fraction", "max_tokens", "budget_fraction", "tasks"}


def _fingerprint(recipe: Recipe, name: str, source: Source, tasks: int) -> str:
    return fingerprint(recipe, source=source.model_dump(mode="json", exclude=NOT_IN_FINGERPRINT), name=name,
                       seed=recipe.training.seed, tasks=tasks, minhash=[MINHASH_BUCKETS, MINHASH_HASHES_PER_BUCKET])


def plan_jobs(recipe: Recipe, names: list[str], tasks: int | dict[str, int],
              budgets: dict[str, int | None] | None = None) -> list[SourceJob]:
    """One job per source of a resolved recipe: `tasks` per source (or one number for all), and
    the token budget of each (recipe.budgets; None or absent reads the source whole)."""
    jobs = []
    for name in names:
        source = recipe.sources[name]
        n = tasks[name] if isinstance(tasks, dict) else tasks
        budget = (budgets or {}).get(name)
        fp = _fingerprint(recipe, name, source, n)
        final = Path(source_folder(recipe, name))
        work = final.parent / WORK / f"{name}-{fp}{'' if budget is None else f'b{budget}'}"  # datatrove's resume state
        jobs.append(SourceJob(name, source, final, work, fp, n, budget))
    return jobs


def is_published(job: SourceJob) -> bool:
    """Whether the source's folder is there, made with these settings and enough tokens for the
    budget, and still agrees with its manifest (one cut short or changed since is prepared again).
    A folder with more than the budget serves a smaller one: lowering a stage's tokens does not
    tokenize the source again; raising them past what the folder holds does."""
    manifest = read_manifest(job.final)
    if not manifest or manifest.get("fingerprint") != job.fingerprint:
        return False
    whole = manifest.get("budget") is None or manifest.get("exhausted")  # read to the source's end
    if not whole and (job.budget is None or manifest["tokens"] < job.budget * (1 - CAP_TOLERANCE)):
        return False
    try:
        verify_source_folder(job.final, job.name)
    except UserError:
        return False
    return True


def clear_stale_work(job: SourceJob) -> bool:
    """A work folder that already published (datatrove marked its last step complete) but whose
    folder is no longer good (cut short, removed, another budget) would make a rerun skip every
    step and publish nothing: it is removed, so the source is prepared from the start. True if so."""
    if is_published(job) or not (job.logs("publish") / "completions").is_dir():
        return False
    shutil.rmtree(job.work)
    return True


# ---------------------------------------------------------------------------------------------
# The pipelines

def pipelines(recipe: Recipe, job: SourceJob, document_end: str) -> list[tuple[str, list, int]]:
    """(step name, datatrove pipeline, tasks) in the order they must run."""
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.utils.hashing import HashConfig

    # datatrove's reader limit is per task; the recipe's cap is for all of them together
    limit = max(1, job.source.max_documents // job.tasks) if job.source.max_documents else -1

    def read_and_filter():  # fresh step objects for each pipeline: datatrove keeps stats on them
        return [build_reader(job.source, limit, str(job.lost_notes), tokenizer_folder(recipe)),
                *build_filters(job.source, tokenizer_folder(recipe))]

    tokenize = NanosetTokenizer(
        str(job.staged), tokenizer_folder(recipe), document_end, seed=recipe.training.seed, budget=job.budget,
        local_working_dir=str(job.work / "tokenize_tmp"), batch_size=1000,
    )
    if not job.source.dedup:
        return [("tokenize", [*read_and_filter(), tokenize], job.tasks)]
    mh = job.work / "minhash"
    config = MinhashConfig(hash_config=HashConfig(precision=64), num_buckets=MINHASH_BUCKETS,
                           hashes_per_bucket=MINHASH_HASHES_PER_BUCKET)
    gate = [TokenBudget(tokenizer_folder(recipe), document_end, int(job.budget * DEDUP_HEADROOM))] if job.budget else []
    return [
        ("signatures", [*read_and_filter(), *gate, MinhashDedupSignature(output_folder=str(mh / "signatures"), config=config)], job.tasks),
        ("buckets", [MinhashDedupBuckets(input_folder=str(mh / "signatures"), output_folder=str(mh / "buckets"), config=config)],
         MINHASH_BUCKETS),
        ("clusters", [MinhashDedupCluster(input_folder=str(mh / "buckets"), output_folder=str(mh / "remove_ids"), config=config)], 1),
        ("tokenize", [*read_and_filter(), MinhashDedupFilter(input_folder=str(mh / "remove_ids")), tokenize], job.tasks),
    ]


def executors(recipe: Recipe, job: SourceJob, document_end: str, kind: Executor, workers: int) -> list:
    """The datatrove executors of one source, chained with `depends`; the last one publishes."""
    steps = pipelines(recipe, job, document_end)
    steps.append(("publish", [PublishNanoset(recipe.name, recipe.hash(), job)], 1))
    chain, previous = [], None
    for step, pipeline, tasks in steps:
        if kind == "local":
            ex = LocalPipelineExecutor(pipeline, tasks=tasks, workers=min(workers, tasks), logging_dir=str(job.logs(step)),
                                       depends=previous)
        else:
            ex = _slurm_executor(recipe, job, step, pipeline, tasks, previous)
        chain.append(ex)
        previous = ex
    return chain


class SlurmExecutor(SlurmPipelineExecutor):
    """datatrove's SLURM executor, leaving out --partition/--qos when the recipe sets none so the
    site's defaults apply (datatrove would write an empty `--partition=`, which sbatch rejects)."""

    def get_sbatch_args(self, max_array: int = 1) -> dict:
        return {k: v for k, v in super().get_sbatch_args(max_array).items() if not (k in ("partition", "qos") and not v)}


def _slurm_executor(recipe: Recipe, job: SourceJob, step: str, pipeline: list, tasks: int, depends):
    # CPU jobs: the data job's partition and time limit (cluster.data_job), not the GPU training's
    cluster, data_job = recipe.cluster, recipe.cluster.data_job
    account = data_job.account or cluster.account
    sbatch_args = {"account": account} if account else {}
    return SlurmExecutor(
        pipeline, tasks=tasks, time=data_job.time, partition=data_job.partition or "", qos=data_job.qos or cluster.qos or "",
        cpus_per_task=1, mem_per_cpu_gb=4 if step == "clusters" else 2,
        job_name=f"{recipe.name}-{job.name}-{step}", logging_dir=str(job.logs(step)),
        slurm_logs_folder=str(job.work / "slurm_logs" / step), venv_path=os.path.join(sys.prefix, "bin", "activate"),
        sbatch_args=sbatch_args, depends=depends,
    )


# ---------------------------------------------------------------------------------------------
# Publishing: manifest + atomic move into place

class PublishNanoset(PipelineStep):
    """Last step of a source: write the manifest and move the nanoset into place (a pipeline step
    so that on SLURM it runs as a job after the tokenizer's, like the rest)."""

    name = "📦 publish nanoset"
    type = "smolrecipe"

    def __init__(self, recipe_name: str, recipe_hash: str, job: SourceJob):
        super().__init__()
        self.recipe_name, self.recipe_hash, self.job = recipe_name, recipe_hash, job

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        publish(self.job, self.recipe_name, self.recipe_hash)
        return data


def _summed_stats(logs: Path) -> list[dict]:
    """datatrove's per-task stats of one step, summed over its tasks."""
    from datatrove.utils.stats import PipelineStats

    total = PipelineStats()
    for path in sorted(glob.glob(str(logs / "stats" / "*.json"))):
        with open(path) as f:
            total = total + PipelineStats.from_json(json.load(f))
    return [stat.to_dict() for stat in total.stats]


def _count(stats: dict, key: str) -> int:
    value = stats.get(key, 0)
    return int(value["total"] if isinstance(value, dict) else value)


def _n(stats: dict, key: str) -> int:
    """How many values a datatrove metric summed (documents, for a per-document metric)."""
    value = stats.get(key, 0)
    return int(value["n"] if isinstance(value, dict) else 0)


def manifest_counts(job: SourceJob) -> dict[str, Any]:
    """Documents read, removed per filter (with datatrove's reasons), removed as duplicates, kept,
    and tokens, from the tokenize pipeline's stats: [reader, *filters, (minhash filter), tokenizer]."""
    steps = _summed_stats(job.logs("tokenize"))
    reader, filters = steps[0]["stats"], [s["stats"] for s in steps[1:1 + len(job.source.filters)]]
    tokenizer = steps[-1]["stats"]
    counts: dict[str, Any] = {
        # datatrove adds a file's documents to "documents" when the file is done, which a reader
        # stopped at the budget never is; every document read passes through doc_len.
        "documents_read": max(_count(reader, "documents"), _n(reader, "doc_len")),
        "filters": [{"name": spec.name, "in": _count(s, "total"), "removed": _count(s, "dropped"),
                     "reasons": {k.removeprefix("dropped_"): _count(s, k) for k in s if k.startswith("dropped_")}}
                    for spec, s in zip(job.source.filters, filters, strict=True)],
        "duplicates_removed": _count(steps[-2]["stats"], "dropped") if job.source.dedup else 0,
        "tokens": _count(tokenizer, "tokens"),
        "documents_kept": _n(tokenizer, "tokens"),  # documents tokenized
        "lost": {k.removeprefix(LOST_PREFIX): _count(reader, k) for k in sorted(reader) if k.startswith(LOST_PREFIX)},
    }
    if job.budget is not None:
        # A task that stops on its budget counts it once; one that ran out of input first does not.
        reached = _count(tokenizer, "budget_reached")
        counts.update(budget=job.budget, tasks_at_budget=reached, exhausted=reached < job.tasks)
    return counts


def lost_records(job: SourceJob, counts: dict[str, Any]) -> tuple[int, dict | None]:
    """(records lost for a reason that counts against max_lost_fraction, the first place one was
    lost: {"reason", "file", "line"}), from the readers' counts and notes."""
    lost = sum(n for reason, n in counts["lost"].items() if reason not in EXCUSED_LOSSES)
    notes = [json.loads(p.read_text()) for p in sorted(job.lost_notes.glob("*.json"))]
    notes = [n for n in notes if n["reason"] not in EXCUSED_LOSSES]
    first = min(notes, key=lambda n: (n["file"], str(n["line"]).zfill(12))) if notes else None
    return lost, first


def check_losses(job: SourceJob, counts: dict[str, Any]) -> None:
    """UserError naming the first bad file and line when the source lost more than its threshold."""
    lost, first = lost_records(job, counts)
    records = counts["documents_read"] + sum(counts["lost"].values())
    if lost and lost > job.source.max_lost_fraction * records:
        reasons = ", ".join(f"{n:,} {reason.replace('_', ' ')}" for reason, n in counts["lost"].items() if n)
        where = f"; first at {first['file']} line {first['line']} ({first['reason'].replace('_', ' ')})" if first else ""
        raise UserError(f"sources.{job.name}", f"{lost:,} of {records:,} records could not be read ({reasons}){where}",
                        f"repair or drop the bad records and delete {job.work} (its finished tasks read the old files), "
                        f"or raise sources.{job.name}.max_lost_fraction (now {job.source.max_lost_fraction:g}) to accept "
                        "the loss; then run the same command again")


def nanoset_files(folder: Path) -> list[dict[str, Any]]:
    return [{"name": p.name, "bytes": p.stat().st_size} for p in sorted(folder.glob("*.ds"))]


def publish(job: SourceJob, recipe_name: str, recipe_hash: str) -> dict[str, Any]:
    """Write the manifest into the staged folder and move it into place. Refuses an empty result."""
    if is_published(job):
        return read_manifest(job.final)
    counts = manifest_counts(job)
    check_losses(job, counts)
    if counts["tokens"] == 0 or not list(job.staged.glob("*.ds")):
        raise UserError(f"sources.{job.name}", f"nothing left to tokenize: {counts['documents_read']:,} documents read, "
                          f"{counts['documents_kept']:,} kept after filters and dedup",
                          "loosen the source's filters or check its text field")
    metadata = sorted(job.staged.glob("*.metadata"))
    tokenizer_line = metadata[0].read_text().splitlines()[0]
    tokenizer_name, token_size = tokenizer_line.rsplit("|", 1)
    manifest = {
        "recipe": recipe_name,
        "recipe_hash": recipe_hash,
        "source": job.name,
        "fingerprint": job.fingerprint,
        "settings": job.source.model_dump(mode="json"),
        "tokenizer": tokenizer_name,
        "token_size": int(token_size),
        "vocab_size": tokenizer_entries(tokenizer_name),
        **counts,
        "files": nanoset_files(job.staged),
        "tasks": job.tasks,
        "datatrove": _version("datatrove"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json(job.staged / MANIFEST, manifest)
    replace_folder(job.staged, job.final)  # a folder of another fingerprint is replaced whole
    for scratch in ("minhash", "tokenize_tmp"):  # intermediate files; the logs stay for inspection
        shutil.rmtree(job.work / scratch, ignore_errors=True)
    for stale in job.work.parent.glob(f"{job.name}-*"):  # work of this source's earlier settings or budgets
        if stale != job.work and stale.name.removeprefix(f"{job.name}-").isalnum():
            shutil.rmtree(stale, ignore_errors=True)
    return manifest


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)
