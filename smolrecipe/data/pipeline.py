"""Recipe sources -> nanoset folders, with datatrove.

Per source, one readable list of datatrove steps:

    read -> the source's filters -> tokenize                                (dedup off)
    read -> filters -> minhash signatures | buckets | clusters | read -> filters -> minhash filter -> tokenize

run by datatrove's LocalPipelineExecutor on one machine or SlurmPipelineExecutor on a cluster,
then published: the tokenized files move from the source's work folder to
`<paths.data>/<recipe>/<source>/` together with a `manifest.json` (documents read, kept, removed
per filter, duplicates removed, tokens, files, tokenizer, recipe hash). A nanoset folder
therefore exists only when it is complete; until then everything lives under
`<paths.data>/<recipe>/.work/<source>-<fingerprint>/`, where datatrove's completion markers let a
killed run resume without redoing finished tasks. The fingerprint covers everything that changes
the output (source settings, tokenizer, seed, task count), so a changed source starts afresh and
an unchanged one is not rebuilt.
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
from smolrecipe.data.sources import build_filters, build_reader
from smolrecipe.data.tokenizer import PROVENANCE
from smolrecipe.errors import UserError
from smolrecipe.recipe.plan import source_folder
from smolrecipe.recipe.schema import Recipe, Source

MANIFEST = "manifest.json"
WORK = ".work"
Executor = Literal["local", "slurm"]

# MinHash settings: datatrove's defaults (5-grams, 14 buckets x 8 hashes, 64-bit) flag pairs
# above ~0.75 Jaccard similarity, the setting FineWeb used.
MINHASH_BUCKETS = 14
MINHASH_HASHES_PER_BUCKET = 8


class NanosetTokenizer(DocumentTokenizer):
    """datatrove's DocumentTokenizer, reading the recipe's tokenizer *folder*.

    The name a tokenizer step holds is what datatrove writes into each `.metadata` file, and
    nanotron passes it to AutoTokenizer.from_pretrained, which needs a folder (or hub id). datatrove
    itself loads a local tokenizer only from a tokenizer.json file path. So the folder is the name,
    and the file inside it is what we load. Each task also shuffles with its own seed (seed, rank),
    so a task's output does not depend on which tasks ran before it in the same process.
    """

    def __init__(self, output_folder: str, tokenizer_folder: str, document_end: str, seed: int, **kwargs):
        super().__init__(output_folder, tokenizer_name_or_path=tokenizer_folder, eos_token=document_end, seed=seed, **kwargs)
        self.base_seed = seed

    @cached_property
    def tokenizer(self):
        from tokenizers import Tokenizer
        from tokenizers.processors import TemplateProcessing

        tokenizer = Tokenizer.from_file(os.path.join(self.tokenizer_name_or_path, "tokenizer.json"))
        tokenizer.post_processor = TemplateProcessing(  # text, then the document-end token; no BOS
            single="$A <EOS>", special_tokens=[("<EOS>", tokenizer.token_to_id(self.eos_token))], pair=None)
        return tokenizer

    def run(self, data, rank: int = 0, world_size: int = 1):
        import numpy as np

        self.rand = np.random.default_rng([self.base_seed, rank])
        return super().run(data, rank, world_size)


@dataclass(frozen=True)
class SourceJob:
    """Where one source's pipeline reads, works and publishes."""

    name: str
    source: Source  # paths resolved
    final: Path
    work: Path
    fingerprint: str
    tasks: int

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


def _fingerprint(recipe: Recipe, name: str, source: Source, tasks: int) -> str:
    return fingerprint(recipe, source=source.model_dump(mode="json"), name=name, seed=recipe.training.seed, tasks=tasks,
                       minhash=[MINHASH_BUCKETS, MINHASH_HASHES_PER_BUCKET])


def plan_jobs(recipe: Recipe, names: list[str], tasks: int) -> list[SourceJob]:
    """One job per source of a resolved recipe."""
    jobs = []
    for name in names:
        source = recipe.sources[name]
        fp = _fingerprint(recipe, name, source, tasks)
        final = Path(source_folder(recipe, name))
        jobs.append(SourceJob(name, source, final, final.parent / WORK / f"{name}-{fp}", fp, tasks))
    return jobs


def is_published(job: SourceJob) -> bool:
    manifest = job.final / MANIFEST
    return manifest.is_file() and json.loads(manifest.read_text()).get("fingerprint") == job.fingerprint


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
        return [build_reader(job.source, limit), *build_filters(job.source)]

    tokenize = NanosetTokenizer(
        str(job.staged), tokenizer_folder(recipe), document_end, seed=recipe.training.seed,
        local_working_dir=str(job.work / "tokenize_tmp"), batch_size=1000,
    )
    if not job.source.dedup:
        return [("tokenize", [*read_and_filter(), tokenize], job.tasks)]
    mh = job.work / "minhash"
    config = MinhashConfig(hash_config=HashConfig(precision=64), num_buckets=MINHASH_BUCKETS,
                           hashes_per_bucket=MINHASH_HASHES_PER_BUCKET)
    return [
        ("signatures", [*read_and_filter(), MinhashDedupSignature(output_folder=str(mh / "signatures"), config=config)], job.tasks),
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
    cluster = recipe.cluster
    sbatch_args = {"account": cluster.account} if cluster.account else {}
    return SlurmExecutor(
        pipeline, tasks=tasks, time=cluster.time, partition=cluster.partition or "", qos=cluster.qos or "",
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


def manifest_counts(job: SourceJob) -> dict[str, Any]:
    """Documents read, removed per filter (with datatrove's reasons), removed as duplicates, kept,
    and tokens, from the tokenize pipeline's stats: [reader, *filters, (minhash filter), tokenizer]."""
    steps = _summed_stats(job.logs("tokenize"))
    reader, filters = steps[0]["stats"], [s["stats"] for s in steps[1:1 + len(job.source.filters)]]
    counts: dict[str, Any] = {
        "documents_read": _count(reader, "documents"),
        "filters": [{"name": spec.name, "in": _count(s, "total"), "removed": _count(s, "dropped"),
                     "reasons": {k.removeprefix("dropped_"): _count(s, k) for k in s if k.startswith("dropped_")}}
                    for spec, s in zip(job.source.filters, filters, strict=True)],
        "duplicates_removed": _count(steps[-2]["stats"], "dropped") if job.source.dedup else 0,
        "tokens": _count(steps[-1]["stats"], "tokens"),
    }
    removed = sum(f["removed"] for f in counts["filters"]) + counts["duplicates_removed"]
    counts["documents_kept"] = counts["documents_read"] - removed
    return counts


def nanoset_files(folder: Path) -> list[dict[str, Any]]:
    return [{"name": p.name, "bytes": p.stat().st_size} for p in sorted(folder.glob("*.ds"))]


def publish(job: SourceJob, recipe_name: str, recipe_hash: str) -> dict[str, Any]:
    """Write the manifest into the staged folder and move it into place. Refuses an empty result."""
    if is_published(job):
        return json.loads((job.final / MANIFEST).read_text())
    counts = manifest_counts(job)
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
    for stale in job.work.parent.glob(f"{job.name}-*"):  # work of this source's earlier settings
        if stale != job.work and stale.name.removeprefix(f"{job.name}-").isalnum():
            shutil.rmtree(stale, ignore_errors=True)
    return manifest


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None
