"""Run an evaluation suite on one checkpoint with lighteval, and write its results JSON.

A checkpoint is a transformers folder (a local-backend `checkpoint-<N>`, an exported model), a
nanotron checkpoint (converted to a temporary transformers folder first), or a model id with a
packaged copy (SmolLM2-135M-Instruct, for checking the harness). lighteval's accelerate backend
scores it on the GPU when there is one, otherwise on the CPU.

What we change in lighteval's defaults is in smolrecipe.eval.lighteval_session; each run also
gets a fresh prediction cache (lighteval keys it by the model's path, not its weights, so
re-evaluating a retrained checkpoint would read stale answers).

The ppl: slices and needle: grids are not lighteval tasks: smolrecipe.eval.perplexity and
smolrecipe.eval.needle score them here, with the model loaded once for each kind.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import os
import tempfile
import time
import types
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from smolrecipe import PROJECT_ROOT
from smolrecipe.atomic import write_file, write_json
from smolrecipe.backends.hf_folder import check_hf_folder
from smolrecipe.errors import UserError
from smolrecipe.eval import checks as sft_checks
from smolrecipe.eval.lighteval_session import lighteval_model_config, lighteval_session
from smolrecipe.eval.pairs import load_pairs
from smolrecipe.eval.qa import load_items
from smolrecipe.kinds import is_chat_model
from smolrecipe.recipe.envpaths import expand, project_path, unset_in
from smolrecipe.recipe.suites import HUB_ID, NeedleSpec, Suite
from smolrecipe.runs import read_json_if_any, results_dir, stage_of_backend_dir


def local_copies(dirs: list[str]) -> dict[str, Path]:
    """task name -> local copy folder, from the first listed folder that has a sub-folder of that name."""
    found: dict[str, Path] = {}
    for entry in dirs:
        expanded = os.path.expandvars(entry)
        if "$" in expanded or not expanded:  # an unset variable: skip the entry
            continue
        folder = Path(project_path(expanded))
        if folder.is_dir():
            for sub in sorted(folder.iterdir()):
                if sub.is_dir():
                    found.setdefault(sub.name, sub)
    return found


def benchmark_copies(raw: dict[str, Any], local: dict[str, str] | None) -> dict[str, Path]:
    """task name -> local copy: the suites file's local_copies folders, then --local NAME=PATH (which wins)."""
    return {**local_copies(raw.get("local_copies", [])), **{k: Path(v) for k, v in (local or {}).items()}}


def slice_specs(raw: dict[str, Any], suite: Suite, overrides: dict[str, str]):
    from smolrecipe.eval.tasks import Slice

    specs = {**raw.get("slices", {}), **{name: spec.model_dump() for name, spec in suite.slices.items()}}
    for name, source in overrides.items():
        specs[name] = {"source": source}
    out = {}
    for name, spec in specs.items():
        source = spec["source"]
        if "$" in source:  # ${VAR} / ${VAR:-default}, as in a recipe's paths (where make demo writes held-out text)
            source = expand(source, f"slices.{name}.source")
        if not Path(source).is_absolute() and Path(project_path(source)).exists() and not Path(source).exists():
            source = project_path(source)
        out[name] = Slice(name=name, **{**spec, "source": source})
    return out


def qa_specs(raw: dict[str, Any], suite: Suite) -> dict[str, Path]:
    """qa:<name> -> its item file, from the file's top-level `qa:` and the suite's own (which win);
    ${VAR} and ${VAR:-default} expanded and a relative path relative to the checkout, as every path
    of a recipe (the demo's items are where SMOLRECIPE_DATA puts its corpus)."""
    specs = {**raw.get("qa", {}), **{name: spec.model_dump() for name, spec in suite.qa.items()}}
    return {name: Path(project_path(_expanded_if_set(spec["source"], f"qa.{name}.source"))) for name, spec in specs.items()}


def _expanded_if_set(source: str, field_name: str) -> str:
    # Every suite's qa files are listed, not only the tasks that run: one naming an unset variable
    # stays as written, and only a task that reads it stops (no such QA item file, with the path).
    return source if unset_in(source) else expand(source, field_name)


def pairs_specs(raw: dict[str, Any], suite: Suite) -> dict[str, str]:
    """pairs:<name> -> its pair file as written, from the file's top-level `pairs:` and the suite's own
    (which win). Expanded only when the task runs (pair_file): a recipe's variables need not be set
    for the suites that do not read its pairs."""
    specs = {**raw.get("pairs", {}), **{name: spec.model_dump() for name, spec in suite.pairs.items()}}
    return {name: spec["source"] for name, spec in specs.items()}


def pair_file(name: str, source: str) -> Path:
    """A pair file's path: ${VAR} and ${VAR:-default} expanded as in a recipe's paths (the file is
    where a recipe's paths.data puts it), a relative path relative to the checkout."""
    field_name = f"pairs.{name}.source"
    if missing := unset_in(source):
        raise UserError(field_name, f"environment variable ${missing[0]} is not set ({source})",
                        f"export {missing[0]} as for the recipe that prepared the pairs, or give an absolute path in eval/suites.yaml")
    return Path(project_path(expand(source, field_name)))


def needle_specs(raw: dict[str, Any], suite: Suite) -> dict[str, NeedleSpec]:
    """needle:<name> -> its grid, from the file's top-level `needles:` and the suite's own (which win).
    The haystack is expanded only when the task runs (needle_haystack), as a pair file is."""
    specs = {**raw.get("needles", {}), **{name: spec.model_dump() for name, spec in suite.needles.items()}}
    return {name: NeedleSpec(**spec) for name, spec in specs.items()}


def needle_haystack(name: str, source: str) -> Path:
    """A needle grid's haystack file or folder: ${VAR} and ${VAR:-default} expanded as in a recipe's
    paths, a relative path relative to the checkout; it must exist (a haystack is never downloaded)."""
    field_name = f"needles.{name}.haystack"
    if missing := unset_in(source):
        raise UserError(field_name, f"environment variable ${missing[0]} is not set ({source})",
                        "export it as for the recipe whose held-out text it names, or give an absolute path in eval/suites.yaml")
    path = Path(project_path(expand(source, field_name)))
    if not path.exists():
        raise UserError(field_name, f"{path} does not exist",
                        "make demo writes the demo's held-out text there (tools/make_demo_corpus.py --out runs/data/heldout --seed 1 "
                        "--scale 0.05); otherwise point it at a local JSONL or text file or folder of held-out text")
    return path


def hub_skips(names: list[str], suite: Suite, raw: dict[str, Any], specs: dict, copies: dict[str, Path]) -> dict[str, str]:
    """{task: why it is skipped} for a suite with `hub: skip`: the tasks that would download a hub
    dataset for want of a local copy. Other suites skip nothing (they download)."""
    from smolrecipe.eval.tasks import TASK_PREFIX, hub_dataset

    if suite.hub != "skip":
        return {}
    folders = " or ".join(raw.get("local_copies", [])) or "a local_copies folder of eval/suites.yaml"
    skipped = {}
    for name in names:
        hub = hub_dataset(name, specs, copies)
        if hub is None:
            continue
        key = name.split(":")[-1]
        if name.startswith(TASK_PREFIX["slice"]):
            skipped[name] = (f"slice '{key}' reads the hub dataset {hub} and suite {suite.name} has hub: skip; "
                             f"give it a local file or folder (--slice {key}=PATH) to run it")
        else:
            skipped[name] = (f"no local copy of {key} in {folders}; put one there (or pass --local {key}=PATH) to run it "
                             f"instead of downloading {hub}")
    return skipped


# --- checkpoints ---------------------------------------------------------------------------------


@contextmanager
def as_hf_folder(checkpoint: str, work_dir: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(transformers folder, provenance) for a checkpoint of either backend, or a model id with a packaged copy."""
    from smolrecipe.backends import checkpoint_backend
    from smolrecipe.eval.packaged_model import save_as_hf_folder

    path = Path(checkpoint)
    owner = checkpoint_backend(path)
    if owner is not None:
        with owner.hf_folder(path, work_dir) as found:
            yield found
    elif path.exists() or not HUB_ID.fullmatch(checkpoint):
        problem = "is neither a transformers folder (config.json) nor a nanotron checkpoint" if path.exists() else "does not exist"
        raise UserError("CHECKPOINT", f"{path} {problem}",
                        "give a checkpoint-<N> folder of a local run, a nanotron <checkpoints>/<step> folder, or a model id")
    else:
        try:
            hf = save_as_hf_folder(checkpoint, work_dir / "hf")
        except OSError as err:  # transformers' way of saying "not on the hub, not in the cache"
            raise UserError("CHECKPOINT", f"cannot load model '{checkpoint}' ({str(err).splitlines()[0][:200]})",
                            "give a local folder, or go online once so that the hub id is cached") from None
        yield hf, {"source": checkpoint}


# --- running ------------------------------------------------------------------------------------


def _plain(value):
    """numpy scalars as floats, NaN (a rate with no eligible item) as null: results files are plain JSON."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return number if math.isfinite(number) else None


@dataclass
class SuiteResult:
    path: Path
    data: dict[str, Any]

    def line(self) -> str:
        d = self.data
        rate = f"{d['items_per_s']:.2f} items/s" if d["items_per_s"] is not None else "nothing run"
        skipped = f", {len(d['skipped'])} skipped" if d.get("skipped") else ""
        return f"{d['suite']}: {len(d['tasks'])} task(s){skipped}, {d['items']:,} items in {d['seconds']:.1f}s ({rate}) -> {self.path}"


def default_output_dir(provenance: dict[str, Any], hf_dir: Path) -> Path:
    """Beside the run when the checkpoint is a recipe run's (where tools/report.py finds it),
    otherwise results/<model folder name>."""
    if provenance.get("backend") == "local" and provenance.get("recipe") and provenance.get("stage"):
        stage_folder, _ = stage_of_backend_dir(hf_dir.parent)
        return results_dir(stage_folder.parent, provenance["stage"], provenance["step"])
    if provenance.get("recipe") and provenance.get("stage"):
        return PROJECT_ROOT / "results" / f"{provenance['recipe']}-{provenance['stage']}" / str(provenance.get("step"))
    return PROJECT_ROOT / "results" / hf_dir.name


def causal_lm(hf_dir: Path):
    """The checkpoint as a transformers causal LM in eval mode: bf16 on the GPU when there is one, else fp32 on the CPU."""
    import torch
    from transformers import AutoModelForCausalLM

    cuda = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.bfloat16 if cuda else torch.float32)
    return model.to("cuda" if cuda else "cpu").eval()


def score_slices(hf_dir: Path, tokenizer, specs: list, token_budget: int) -> dict[str, dict[str, Any]]:
    from smolrecipe.eval.perplexity import score_texts
    from smolrecipe.eval.tasks import slice_texts

    model = causal_lm(hf_dir)
    out = {}
    for spec in specs:
        scored = score_texts(model, tokenizer, slice_texts(spec, tokenizer, token_budget), desc=f"ppl:{spec.name}")
        out[f"ppl:{spec.name}"] = scored.metrics() | {"n": scored.documents}
    return out


def score_needle_tasks(hf_dir: Path, tokenizer, grids: dict[str, tuple[NeedleSpec, Path]], limit: int | None,
                       batch_size: int) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """(per-task results, answer records) of the needle:<name> tasks `grids` (name -> spec and haystack),
    the model loaded once for all of them."""
    from smolrecipe.eval.needle import EXTRA_TOKENS, grid_items, model_generate, score_needles

    items = {name: grid_items(name, spec, path, tokenizer, limit) for name, (spec, path) in grids.items()}  # a bad haystack: before loading
    model = causal_lm(hf_dir)
    out, answers = {}, []
    for name, (spec, _path) in grids.items():
        generate = model_generate(model, tokenizer, spec.digits + EXTRA_TOKENS)
        metrics, records = score_needles(f"needle:{name}", spec, items[name], generate, batch_size,
                                         context=getattr(model.config, "max_position_embeddings", None))
        out[f"needle:{name}"] = metrics
        answers += records
    return out, answers


def run_lighteval(hf_dir: Path, tokenizer, names: list[str], ctx, limit: int | None,
                  batch_size: int) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """(per-task metrics and item counts, generated answers) of the lighteval tasks `names`."""
    from smolrecipe.eval.tasks import build_tasks, merge_parts, task_of

    with tempfile.TemporaryDirectory(prefix="smolrecipe-eval-") as tmp, lighteval_session():
        from lighteval.logging.evaluation_tracker import EvaluationTracker
        from lighteval.pipeline import ParallelismManager, Pipeline, PipelineParameters

        ctx.data_dir = Path(tmp) / "data"
        module = types.ModuleType("smolrecipe_eval_tasks")
        module.TASKS_TABLE = build_tasks(ctx, names)
        try:
            pipeline = Pipeline(
                tasks=",".join(f"{c.name}|0" for c in module.TASKS_TABLE),
                pipeline_parameters=PipelineParameters(launcher_type=ParallelismManager.ACCELERATE, custom_tasks_directory=module,
                                                       max_samples=limit),
                evaluation_tracker=EvaluationTracker(output_dir=str(Path(tmp) / "tracker"), save_details=False),
                model_config=lighteval_model_config(hf_dir, batch_size, Path(tmp) / "cache"),
            )
        except OSError as err:  # datasets' hub and file errors (offline, no such dataset) are OSErrors
            raise UserError("--tasks", f"lighteval could not load a task's data ({str(err).splitlines()[0][:200]})",
                              "give the benchmark as a local copy (--local NAME=PATH, or $SMOLRECIPE_BENCHMARKS/<name>/), "
                              "or go online once so the HF datasets cache has it") from None
        pipeline.evaluate()
        # lighteval keys documents by "<task>|<fewshots>" and results by "<task>:<fewshots>"
        results = {name.rsplit(":", 1)[0]: metrics for name, metrics in pipeline.get_results()["results"].items()}
        counts = {name.rsplit("|", 1)[0]: len(docs) for name, docs in pipeline.documents_dict.items()}
        categories = {name.rsplit("|", 1)[0]: Counter((doc.specific or {}).get("category") for doc in docs)
                      for name, docs in pipeline.documents_dict.items()}
        answers = generated_answers(pipeline.evaluation_tracker.details_logger.details)
    metrics = {c.name: {k: _plain(v) for k, v in results[c.name].items()} | {"n": counts[c.name]} for c in module.TASKS_TABLE}
    for answer in answers:
        answer["task"] = task_of(answer["task"])
    return merge_parts(metrics, categories), answers


def suite_categories(answers: list[dict[str, Any]], suite_file: Path | None) -> dict[str, float]:
    """Tier 4's all-checks pass rate per prompt category (sft_checks.score_answers), over the
    categories of the prompts that were run."""
    prompts = {p.id: p for p in sft_checks.load_suite(suite_file)}
    run = [a for a in answers if a["task"] == "sft_suite"]
    rates = sft_checks.score_answers([prompts[a["id"]] for a in run], [a["answer"] for a in run],
                                     [a["scores"]["clean_end"] == 1.0 for a in run])
    return {name: rate for name, rate in rates["per_category"].items() if rate is not None}


def generated_answers(details: dict) -> list[dict[str, Any]]:
    """One record per generated answer (tier 4, GSM8K) with its scores: what people read to see
    why a rate is what it is."""
    records = []
    for task, items in details.items():
        for detail in items:
            if not detail.model_response.text:  # log-likelihood tasks generate nothing
                continue
            doc, specific = detail.doc, detail.doc.specific or {}
            records.append({"task": task.rsplit("|", 1)[0], "id": specific.get("prompt_id"),
                            "prompt": doc.query, "answer": detail.model_response.text[0],
                            "scores": {k: _plain(v) for k, v in detail.metric.items()}}
                           | {key: specific[key] for key in ("category", "expected") if key in specific})  # qa items'
    return records


def _source(task: str, specs: dict, copies: dict[str, Path], qa_files: dict[str, Path], pair_files: dict[str, Path],
            haystacks: dict[str, Path] | None = None) -> str:
    key = task.split(":")[-1]
    if task.startswith("ppl:"):
        return specs[key].source
    if task.startswith("needle:"):
        return str((haystacks or {})[key])
    if task.startswith("qa:"):
        return str(qa_files[key])
    if task.startswith("pairs:"):
        return str(pair_files[key])
    if task == "sft_suite":
        return str(copies.get(task, sft_checks.SUITE_PATH))
    return str(copies[key].resolve()) if key in copies else "hub"


# Raised when a task's scoring changes (a scorer fix, a new item field), so that results kept beside
# a run are scored again rather than compared with new ones (2: qa items' `also` phrases).
SCORING_VERSION = 2


def scoring(raw: dict[str, Any], suite: Suite) -> dict[str, Any]:
    """What the suite's scores depend on besides the checkpoint: the scoring version and the
    content of its qa: item files (regenerated items are scored again)."""
    files = qa_specs(raw, suite)
    items = {f"qa:{name}": hashlib.sha256(files[name].read_bytes()).hexdigest()[:16]
             for name in sorted(files) if f"qa:{name}" in suite.tasks and files[name].is_file()}
    return {"version": SCORING_VERSION, "items": items}


def up_to_date(path: Path, provenance: dict[str, Any], suite: Suite, limit: int | None, raw: dict[str, Any] | None = None,
               slices: dict[str, str] | None = None, local: dict[str, str] | None = None) -> bool:
    """Whether `path` already holds this suite's results for this very checkpoint (a local run's
    stage fingerprint and step), scored as now (`scoring`): then a rerun of the recipe's evaluations
    skips it. Tasks a `hub: skip` suite skipped count as done while they would still be skipped
    (`raw`, `slices`, `local` as for run_suite); once a local copy is there, the suite runs again."""
    old = read_json_if_any(path)
    model = old.get("model") or {}
    skipped = old.get("skipped") or {}
    same = (provenance.get("fingerprint") is not None and model.get("fingerprint") == provenance["fingerprint"]
            and model.get("step") == provenance.get("step") and set(skipped) <= set(suite.tasks)
            and list(old.get("tasks", {})) == [t for t in suite.tasks if t not in skipped]
            and old.get("limit") == (limit if limit is not None else suite.limit)
            and old.get("scoring") == scoring(raw or {}, suite))
    if same and skipped:
        raw = raw or {}
        copies = benchmark_copies(raw, local)
        same = set(hub_skips(list(skipped), suite, raw, slice_specs(raw, suite, slices or {}), copies)) == set(skipped)
    return same


def run_suite(hf_dir: Path, provenance: dict[str, Any], suite: Suite, raw: dict[str, Any], out_dir: Path, *,
              tasks: list[str] | None = None, limit: int | None = None, slices: dict[str, str] | None = None,
              local: dict[str, str] | None = None, chat: bool | None = None, batch_size: int = 16) -> SuiteResult:
    """Run `suite` (or the `tasks` subset of it) on `hf_dir`, write `<out_dir>/<suite>.json`."""
    check_hf_folder(hf_dir)  # a cut or garbled checkpoint: one line now, not a traceback once the harness has loaded
    from transformers import AutoTokenizer

    from smolrecipe.eval.tasks import TaskContext, known_tasks

    specs, qa_files, pair_sources = slice_specs(raw, suite, slices or {}), qa_specs(raw, suite), pairs_specs(raw, suite)
    needles = needle_specs(raw, suite)
    names = tasks or suite.tasks
    known = known_tasks(specs, qa_files, pair_sources, needles)
    if unknown := [n for n in names if n not in known]:
        raise UserError("--tasks", f"unknown task(s) {unknown}", f"use some of {', '.join(known)}")
    pair_files: dict[str, Path] = {}
    haystacks: dict[str, Path] = {}
    for name in names:  # a bad item or pair file, a missing haystack: one line now, not after the slices are scored
        if name.startswith("needle:"):
            key = name.removeprefix("needle:")
            haystacks[key] = needle_haystack(key, needles[key].haystack)
        elif name.startswith("qa:"):
            load_items(qa_files[name.removeprefix("qa:")])
        elif name.startswith("pairs:"):
            key = name.removeprefix("pairs:")
            pair_files[key] = pair_file(key, pair_sources[key])
            load_pairs(pair_files[key])
    copies = benchmark_copies(raw, local)
    skipped = hub_skips(names, suite, raw, specs, copies)  # before any work: nothing of theirs is loaded
    for name, why in skipped.items():
        print(f"{suite.name}: skipping {name}: {why}", flush=True)
    names = [n for n in names if n not in skipped]
    tokenizer = AutoTokenizer.from_pretrained(str(hf_dir))
    if chat is None:  # SFT models answer in their chat format; base models continue plain text
        chat = is_chat_model(provenance.get("kind")) or (provenance.get("kind") is None and bool(tokenizer.chat_template))
    limit = limit if limit is not None else suite.limit

    per_task: dict[str, dict[str, Any]] = {}
    start = time.time()
    ppl_names = [n for n in names if n.startswith("ppl:")]
    if ppl_names:
        per_task |= score_slices(hf_dir, tokenizer, [specs[n.removeprefix("ppl:")] for n in ppl_names], suite.token_budget)
    answers: list[dict[str, Any]] = []
    needle_keys = [n.removeprefix("needle:") for n in names if n.startswith("needle:")]
    if needle_keys:
        grids = {key: (needles[key], haystacks[key]) for key in needle_keys}
        metrics, answers = score_needle_tasks(hf_dir, tokenizer, grids, limit, batch_size)
        per_task |= metrics
    lighteval_names = [n for n in names if not n.startswith(("ppl:", "needle:"))]
    if lighteval_names:
        metrics, generated = run_lighteval(hf_dir, tokenizer, lighteval_names, TaskContext(
            tokenizer=tokenizer, data_dir=Path(), local=copies, chat=chat, max_new_tokens=suite.max_new_tokens, qa=qa_files,
            limit=limit, pairs=pair_files), limit, batch_size)
        per_task |= metrics
        answers += generated
    seconds = time.time() - start
    if "sft_suite" in per_task:
        per_task["sft_suite"]["per_category"] = suite_categories(answers, copies.get("sft_suite"))
    per_task = {name: per_task[name] for name in names}
    counts = {name: metrics["n"] for name, metrics in per_task.items()}
    items = sum(counts.values())
    data = {
        "suite": suite.name, "checkpoint": provenance.get("source", str(hf_dir)), "model": provenance, "chat_prompts": chat,
        "limit": limit, "tasks": per_task, "items": items, "seconds": round(seconds, 2),
        "items_per_s": round(items / seconds, 3) if seconds else None,
        "sources": {name: _source(name, specs, copies, qa_files, pair_files, haystacks) for name in per_task},
        "scoring": scoring(raw, suite),
        "lighteval_version": importlib.metadata.version("lighteval"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if skipped:
        data["skipped"] = skipped
    if answers:  # beside the results, not in them: tools/report.py reads */<suite>.json only
        write_file(out_dir / f"{suite.name}.answers.jsonl", "".join(json.dumps(a) + "\n" for a in answers))
    path = out_dir / f"{suite.name}.json"
    write_json(path, data)
    return SuiteResult(path, data)
