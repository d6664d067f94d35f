"""lighteval task definitions for the evaluation tiers, built for one checkpoint's tokenizer.

- tier 2, perplexity: `ppl:<slice>` names a text slice (web, code, math; a hub dataset or a local
  JSONL file/folder), capped by a token budget; smolrecipe.eval.perplexity scores it (lighteval 0.13's
  rolling log-likelihood for transformers models cannot: it needs a non-empty continuation and
  reads each token's log-probability from its own position rather than the one before).
- tier 3, multiple choice by conditional likelihood: `mc:<task>` in lighteval's cloze formulation
  (the answer text is scored after "Answer:", never a letter: letters are noise for models this
  small), reporting acc and acc_norm (log-probability per character). The prompts come from
  lighteval's own templates (multichoice, hellaswag, copa) and its winogrande prompt. lighteval's
  built-in piqa/hellaswag/openbookqa/siqa/commonsenseqa/mmlu tasks are lettered or generative, so
  they are not reused as they stand.
- tier 4, `sft_suite`: the 50 fixed chat prompts of eval/sft_suite.jsonl, generated greedily and
  scored by the deterministic checks in smolrecipe.eval.checks.
- `gsm8k`: generative, exact match on the final number of the answer.
- `qa:<name>`: closed-book questions about the demo world from a local item file (smolrecipe.eval.qa),
  scored twice, so two lighteval tasks: `qa:<name>.gen` answers each question greedily (the chat
  template for chat models, "Question: ...\nAnswer:" otherwise) and matches the answer;
  `qa:<name>.mc` scores the items that have choices by conditional likelihood after their cloze.
  merge_parts folds both into one `qa:<name>` entry of the results.
- `pairs:<name>`: held-out preference pairs from a local file (smolrecipe.eval.pairs), each scored by
  the likelihood of its chosen and its rejected answer after the prompt, which is already rendered
  with the chat template and so is given to lighteval as it is, chat model or not.
- `needle:<name>`: needle-in-a-haystack retrieval over a grid of lengths x depths, haystacks from a
  local text folder (smolrecipe.eval.needle); not a lighteval task: the runner scores it itself.

A task reads a local copy when one is given (a folder in the author's layout, such as PIQA's
`valid.jsonl` + `valid-labels.lst`, or JSONL in the hub layout), otherwise its hub dataset. Local
copies are rewritten once into a small folder that `datasets.load_dataset` reads, because that
is all lighteval accepts as a dataset.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from lighteval.metrics.dynamic_metrics import LogLikelihoodAccMetric
from lighteval.metrics.metrics_sample import SampleLevelComputation
from lighteval.metrics.normalizations import LogProbCharNorm
from lighteval.metrics.utils.metric_utils import SampleLevelMetric, SampleLevelMetricGrouping
from lighteval.tasks.lighteval_task import LightevalTaskConfig
from lighteval.tasks.requests import Doc, SamplingMethod
from lighteval.tasks.tasks.winogrande import winogrande_prompt
from lighteval.tasks.templates.copa import get_copa_prompt_function
from lighteval.tasks.templates.hellaswag import get_hellaswag_prompt_function
from lighteval.tasks.templates.multichoice import get_mcq_prompt_function
from lighteval.tasks.templates.utils.formulation import CFFormulation
from lighteval.utils.language import Language

from smolrecipe.atomic import staged_folder
from smolrecipe.errors import UserError
from smolrecipe.eval import checks as sft_checks
from smolrecipe.eval import pairs, qa
from smolrecipe.eval.qa import final_number
from smolrecipe.recipe.suites import HUB_ID

EN = Language.ENGLISH
CF = CFFormulation()


def _letter_index(line: dict) -> int:
    return line["choices"]["label"].index(line["answerKey"].strip())


def _choices_text(question_key: str) -> Callable[[dict], dict]:
    return lambda line: {"question": line[question_key], "choices": line["choices"]["text"], "gold_idx": _letter_index(line)}


@dataclass(frozen=True)
class ChoiceTask:
    """One tier-3 benchmark: where its data lives and how a row becomes a cloze prompt."""

    name: str
    hub: str
    subset: str | None
    split: str
    prompt: Callable[[dict, str], Doc]
    local_reader: Callable[[Path], Iterator[dict]] | None = None  # the author's own layout, when it is not the hub's


def _piqa_local(folder: Path) -> Iterator[dict]:
    """PIQA as its authors publish it: valid.jsonl (goal, sol1, sol2) + valid-labels.lst, aligned by line."""
    rows = (folder / "valid.jsonl").read_text().splitlines()
    labels = (folder / "valid-labels.lst").read_text().split()
    if len(rows) != len(labels):
        raise UserError("eval.local.piqa", f"{folder}: {len(rows)} questions but {len(labels)} labels",
                          "use the unchanged valid.jsonl and valid-labels.lst from the PIQA release")
    for row, label in zip(rows, labels, strict=True):
        yield {**json.loads(row), "label": int(label)}


def _gsm8k_local(folder: Path) -> Iterator[dict]:
    with open(folder / "test.jsonl") as f:
        yield from (json.loads(line) for line in f if line.strip())


CHOICE_TASKS: dict[str, ChoiceTask] = {t.name: t for t in [
    ChoiceTask("arc_easy", "allenai/ai2_arc", "ARC-Easy", "test", get_mcq_prompt_function(EN, _choices_text("question"), CF)),
    ChoiceTask("arc_challenge", "allenai/ai2_arc", "ARC-Challenge", "test",
               get_mcq_prompt_function(EN, _choices_text("question"), CF)),
    ChoiceTask("openbookqa", "allenai/openbookqa", "main", "test", get_mcq_prompt_function(EN, _choices_text("question_stem"), CF)),
    ChoiceTask("qasc", "allenai/qasc", None, "validation", get_mcq_prompt_function(EN, _choices_text("question"), CF)),
    ChoiceTask("sciq", "allenai/sciq", None, "test", get_mcq_prompt_function(EN, lambda line: {
        "question": line["question"], "gold_idx": 3,
        "choices": [line["distractor1"], line["distractor2"], line["distractor3"], line["correct_answer"]]}, CF)),
    ChoiceTask("commonsense_qa", "tau/commonsense_qa", None, "validation",
               get_mcq_prompt_function(EN, _choices_text("question"), CF)),
    ChoiceTask("hellaswag", "Rowan/hellaswag", None, "validation", get_hellaswag_prompt_function(EN, lambda line: {
        "ctx_a": line["ctx_a"], "ctx_b": line["ctx_b"], "activity_label": line["activity_label"],
        "continuations": line["endings"], "gold_idx": int(line["label"])}, CF)),
    ChoiceTask("copa", "aps/super_glue", "copa", "validation", get_copa_prompt_function(EN, lambda line: {
        "context": line["premise"], "cause_effect": line["question"], "continuations": [line["choice1"], line["choice2"]],
        "gold_idx": int(line["label"])}, CF)),
    ChoiceTask("piqa", "ybisk/piqa", "plain_text", "validation", get_mcq_prompt_function(EN, lambda line: {
        "question": line["goal"], "choices": [line["sol1"], line["sol2"]], "gold_idx": int(line["label"])}, CF), _piqa_local),
    ChoiceTask("winogrande", "allenai/winogrande", "winogrande_xl", "validation", winogrande_prompt),
    ChoiceTask("social_iqa", "allenai/social_i_qa", None, "validation", get_mcq_prompt_function(EN, lambda line: {
        "context": line["context"], "question": line["question"], "gold_idx": int(line["label"]) - 1,
        "choices": [line["answerA"], line["answerB"], line["answerC"]]}, CF)),
    ChoiceTask("mmlu", "cais/mmlu", "all", "test", get_mcq_prompt_function(EN, lambda line: {
        "question": line["question"], "choices": line["choices"], "gold_idx": int(line["answer"])}, CF)),
]}

GSM8K_HUB = ("openai/gsm8k", "main", "test")
TASK_PREFIX = {"choice": "mc:", "slice": "ppl:", "qa": "qa:", "pairs": "pairs:", "needle": "needle:"}


# --- data -------------------------------------------------------------------------------------


def write_local_dataset(rows: Iterator[dict], out: Path, split: str) -> Path:
    """`rows` as `<out>/<split>.jsonl`, the layout `datasets.load_dataset(out)` reads (split from the name)."""
    with staged_folder(out) as staging:
        n = 0
        with open(staging / f"{split}.jsonl", "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
                n += 1
        if n == 0:
            raise UserError("eval.local", f"no rows for {out.name}", "point the task at a non-empty file")
    return out


def _jsonl_rows(path: Path) -> Iterator[dict]:
    """Rows of a JSONL file or a folder of them; a plain-text file is one row {"text": <its content>}."""
    files = sorted(p for p in path.rglob("*") if p.suffix in (".jsonl", ".json", ".txt")) if path.is_dir() else [path]
    if not files:
        raise UserError("eval.local", f"{path} holds no .jsonl or .txt files", "give a JSONL or text file, or a folder of them")
    for file in files:
        if file.suffix == ".txt":
            yield {"text": file.read_text()}
            continue
        with open(file) as f:
            yield from (json.loads(line) for line in f if line.strip())


def local_rows(path: Path, reader: Callable[[Path], Iterator[dict]] | None) -> Iterator[dict]:
    """Rows of a local copy: the author's layout when the task knows one and the folder has it,
    otherwise JSONL in the hub's layout."""
    if reader is not None and path.is_dir():
        try:
            rows = list(reader(path))  # whole, so a missing file cannot cut it short halfway
        except FileNotFoundError:
            rows = None
        if rows is not None:
            yield from rows
            return
    yield from _jsonl_rows(path)


# --- tier 2: perplexity slices -----------------------------------------------------------------


@dataclass(frozen=True)
class Slice:
    """Held-out text for perplexity: a hub dataset (streamed) or a local JSONL / text file or folder."""

    name: str
    source: str
    subset: str | None = None
    split: str = "train"
    text_field: str = "text"


def slice_texts(spec: Slice, tokenizer, token_budget: int) -> list[str]:
    """The slice's first documents, `token_budget` tokens in all (the last one cut to fit)."""
    path = Path(spec.source)
    if path.exists():
        rows = _jsonl_rows(path)
    else:
        from datasets import load_dataset

        rows = iter(load_dataset(spec.source, spec.subset, split=spec.split, streaming=True))
    texts, used = [], 0
    for row in rows:
        if spec.text_field not in row:
            raise UserError(f"eval.slices.{spec.name}.text_field", f"'{spec.text_field}' is not a field of {spec.source}",
                              f"use one of {sorted(row)}")
        ids = tokenizer(row[spec.text_field], add_special_tokens=False)["input_ids"]
        if not ids:
            continue
        take = ids[: token_budget - used]
        texts.append(row[spec.text_field] if len(take) == len(ids) else tokenizer.decode(take))
        used += len(take)
        if used >= token_budget:
            break
    if not texts:
        raise UserError(f"eval.slices.{spec.name}", f"{spec.source} gave no text", "point the slice at a non-empty dataset")
    return texts


# --- tier 4 and gsm8k: generation ----------------------------------------------------------------


def render_chat(tokenizer, messages: list[dict]) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def ended_with_eos(model_response, eos_token_id: int) -> bool:
    """Whether generation stopped on end-of-turn rather than on the token limit. lighteval drops
    special tokens from the text, so this reads the generated ids."""
    tokens = model_response.output_tokens[0] if model_response.output_tokens else []
    return eos_token_id in [int(t) for t in tokens]


class SuiteChecks(SampleLevelComputation):
    """Scores one tier-4 answer with the prompt's deterministic checks (smolrecipe.eval.checks).
    Rates that do not apply to a prompt are NaN, and the corpus means skip them."""

    def __init__(self, prompts: dict[str, sft_checks.SuitePrompt], eos_token_id: int):
        self.prompts, self.eos_token_id = prompts, eos_token_id

    def compute(self, doc: Doc, model_response, **kwargs) -> dict[str, float]:
        prompt = self.prompts[doc.specific["prompt_id"]]
        scores = sft_checks.prompt_scores(prompt, model_response.text[0], ended_with_eos(model_response, self.eos_token_id))
        return {name: float(scores.get(name, math.nan)) for name in SUITE_METRICS}


SUITE_METRICS = list(sft_checks.RATES)


def _nanmean(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


class FinalNumberMatch(SampleLevelComputation):
    def compute(self, doc: Doc, model_response, **kwargs) -> float:
        predicted = final_number(model_response.text[0])
        return float(predicted is not None and predicted == final_number(doc.choices[doc.gold_index]))


gsm8k_exact_match = SampleLevelMetric(
    metric_name="exact_match", sample_level_fn=FinalNumberMatch(), category=SamplingMethod.GENERATIVE,
    corpus_level_fn=np.mean, higher_is_better=True,
)


def _gsm8k_doc(line: dict, task_name: str, tokenizer, chat: bool) -> Doc:
    return Doc(task_name=task_name, query=_question_query(line["question"], tokenizer, chat), choices=[line["answer"]], gold_index=0)


def _question_query(question: str, tokenizer, chat: bool) -> str:
    """A question as gsm8k and qa ask it: the user turn for chat models, "Question: ...\nAnswer:" otherwise."""
    return render_chat(tokenizer, [{"role": "user", "content": question}]) if chat else f"Question: {question}\nAnswer:"


def _base_stops(chat: bool) -> list[str]:
    """A base model's answer ends where it would start the next question (or a blank line); a chat model's at end-of-turn."""
    return [] if chat else ["\nQuestion:", "\n\n"]


def _suite_doc(line: dict, task_name: str, tokenizer) -> Doc:
    return Doc(task_name=task_name, query=render_chat(tokenizer, line["messages"]), choices=[""], gold_index=0,
               specific={"prompt_id": line["id"]})


# --- the task table -------------------------------------------------------------------------------


@dataclass
class TaskContext:
    """What building the tasks needs to know about this evaluation."""

    tokenizer: object
    data_dir: Path  # where local copies are rewritten for datasets.load_dataset
    local: dict[str, Path]  # task name -> local copy
    chat: bool  # render gsm8k and qa questions through the chat template (SFT models)
    max_new_tokens: int = 256
    qa: dict[str, Path] = field(default_factory=dict)  # qa:<name> -> its item file
    limit: int | None = None  # the suite's items per task (qa and pairs apply it themselves: qa_tasks, pairs_task)
    pairs: dict[str, Path] = field(default_factory=dict)  # pairs:<name> -> its pair file


def _dataset(ctx: TaskContext, name: str, hub: str, subset: str | None, split: str,
             reader: Callable[[Path], Iterator[dict]] | None) -> tuple[str, str | None, str]:
    """(hf_repo, hf_subset, split) for lighteval: the hub dataset, or the rewritten local copy."""
    if name not in ctx.local:
        return hub, subset, split
    return str(write_local_dataset(local_rows(ctx.local[name], reader), ctx.data_dir / name, split)), None, split


def choice_task(ctx: TaskContext, task: ChoiceTask) -> LightevalTaskConfig:
    repo, subset, split = _dataset(ctx, task.name, task.hub, task.subset, task.split, task.local_reader)
    return LightevalTaskConfig(
        name=TASK_PREFIX["choice"] + task.name, prompt_function=task.prompt, hf_repo=repo, hf_subset=subset,
        hf_avail_splits=[split], evaluation_splits=[split], few_shots_split=None,
        metrics=[LogLikelihoodAccMetric(normalization=None), LogLikelihoodAccMetric(normalization=LogProbCharNorm())],
    )


def suite_task(ctx: TaskContext) -> LightevalTaskConfig:
    prompts = sft_checks.load_suite(ctx.local.get("sft_suite"))
    rows = ({"id": p.id, "messages": list(p.messages)} for p in prompts)
    repo = write_local_dataset(rows, ctx.data_dir / "sft_suite", "test")
    checks = SampleLevelMetricGrouping(
        metric_name=list(SUITE_METRICS), sample_level_fn=SuiteChecks({p.id: p for p in prompts}, ctx.tokenizer.eos_token_id),
        category=SamplingMethod.GENERATIVE, corpus_level_fn=dict.fromkeys(SUITE_METRICS, _nanmean),
        higher_is_better=dict.fromkeys(SUITE_METRICS, True),
    )
    return LightevalTaskConfig(
        name="sft_suite", prompt_function=partial(_suite_doc, tokenizer=ctx.tokenizer), hf_repo=str(repo), hf_subset=None,
        hf_avail_splits=["test"], evaluation_splits=["test"], generation_size=ctx.max_new_tokens, metrics=[checks],
        stop_sequence=[],  # a list: lighteval 0.13 adds it to a list, and its default is a tuple
    )


def gsm8k_task(ctx: TaskContext) -> LightevalTaskConfig:
    repo, subset, split = _dataset(ctx, "gsm8k", *GSM8K_HUB, _gsm8k_local)
    return LightevalTaskConfig(
        name="gsm8k", prompt_function=partial(_gsm8k_doc, tokenizer=ctx.tokenizer, chat=ctx.chat), hf_repo=repo, hf_subset=subset,
        hf_avail_splits=[split], evaluation_splits=[split], generation_size=ctx.max_new_tokens,
        stop_sequence=_base_stops(ctx.chat), metrics=[gsm8k_exact_match],
    )


# --- qa:<name>: closed-book questions, generated and by likelihood -------------------------------

QA_PARTS = (".gen", ".mc")  # the two lighteval tasks of one qa:<name>, folded back into it by merge_parts
QA_GEN_KEY = {"fact": "em_fact", "arithmetic": "em_arithmetic", "format": "pass_format"}
QA_GEN_METRICS = ["em", *QA_GEN_KEY.values()]
QA_MC_CATEGORIES = ("fact", "arithmetic")  # format items have no choices
QA_MC_METRICS = [f"{kind}_{category}" for kind in ("mc", "mc_norm", "chance") for category in QA_MC_CATEGORIES]


class QAGenerationScores(SampleLevelComputation):
    """em (every item) and its category's rate (em_fact, em_arithmetic or pass_format) for one
    generated answer; the other categories' rates are NaN, which the corpus means skip."""

    def __init__(self, items: dict[str, qa.QAItem]):
        self.items = items

    def compute(self, doc: Doc, model_response, **kwargs) -> dict[str, float]:
        item = self.items[doc.specific["prompt_id"]]
        passed = float(item.passes(model_response.text[0]))
        return dict.fromkeys(QA_GEN_METRICS, math.nan) | {"em": passed, QA_GEN_KEY[item.category]: passed}


class QAChoiceScores(SampleLevelComputation):
    """lighteval's log-likelihood accuracy (LogLikelihoodAccMetric: plain, and per character) of one
    item's choices, and its chance level (1 / number of choices), under the item's category."""

    def __init__(self):
        self.acc = LogLikelihoodAccMetric(normalization=None).sample_level_fn
        self.acc_norm = LogLikelihoodAccMetric(normalization=LogProbCharNorm()).sample_level_fn

    def compute(self, doc: Doc, model_response, **kwargs) -> dict[str, float]:
        category = doc.specific["category"]
        return dict.fromkeys(QA_MC_METRICS, math.nan) | {
            f"mc_{category}": float(self.acc.compute(doc, model_response)),
            f"mc_norm_{category}": float(self.acc_norm.compute(doc, model_response)),
            f"chance_{category}": 1 / len(doc.choices)}


def _grouping(names: list[str], computation: SampleLevelComputation, category: SamplingMethod) -> SampleLevelMetricGrouping:
    return SampleLevelMetricGrouping(metric_name=list(names), sample_level_fn=computation, category=category,
                                     corpus_level_fn=dict.fromkeys(names, _nanmean), higher_is_better=dict.fromkeys(names, True))


def _qa_gen_doc(line: dict, task_name: str, items: dict[str, qa.QAItem], tokenizer, chat: bool) -> Doc:
    item = items[line["id"]]
    return Doc(task_name=task_name, query=_question_query(item.question, tokenizer, chat), choices=[item.answer or ""], gold_index=0,
               specific={"prompt_id": item.id, "category": item.category, "expected": item.expected})


def _qa_mc_doc(line: dict, task_name: str, items: dict[str, qa.QAItem]) -> Doc:
    item = items[line["id"]]
    # the cloze formulation of the mc: tasks: each choice is scored as the continuation of the text, after a space
    return Doc(task_name=task_name, query=item.cloze.rstrip(" "), choices=[f" {c}" for c in item.choices], gold_index=item.gold,
               specific={"prompt_id": item.id, "category": item.category})


def qa_tasks(ctx: TaskContext, name: str) -> list[LightevalTaskConfig]:
    """`qa:<name>.gen` over the selected items and, when any of them has choices, `qa:<name>.mc` over those.

    The suite's limit is applied here (qa.select: that many items, the categories in turn), not by
    lighteval's max_samples, which would draw a random subset; the same limit then keeps them all."""
    items = qa.select(qa.load_items(ctx.qa[name]), ctx.limit)
    by_id = {item.id: item for item in items}
    task = TASK_PREFIX["qa"] + name
    configs = []
    for part, chosen in ((".gen", items), (".mc", [item for item in items if item.choices])):
        if not chosen:
            continue
        repo = write_local_dataset(({"id": item.id} for item in chosen), ctx.data_dir / f"qa-{name}{part}", "test")
        common = dict(name=task + part, hf_repo=str(repo), hf_subset=None, hf_avail_splits=["test"], evaluation_splits=["test"])
        if part == ".gen":
            configs.append(LightevalTaskConfig(
                **common, prompt_function=partial(_qa_gen_doc, items=by_id, tokenizer=ctx.tokenizer, chat=ctx.chat),
                generation_size=ctx.max_new_tokens, stop_sequence=_base_stops(ctx.chat),
                metrics=[_grouping(QA_GEN_METRICS, QAGenerationScores(by_id), SamplingMethod.GENERATIVE)]))
        else:
            configs.append(LightevalTaskConfig(
                **common, prompt_function=partial(_qa_mc_doc, items=by_id),
                metrics=[_grouping(QA_MC_METRICS, QAChoiceScores(), SamplingMethod.LOGPROBS)]))
    return configs


# --- pairs:<name>: held-out preference pairs, by likelihood -------------------------------------

PAIR_METRICS = list(pairs.METRICS)


class PairScores(SampleLevelComputation):
    """pair_acc, pair_acc_norm and margin of one pair (smolrecipe.eval.pairs) from lighteval's
    log-likelihoods of its continuations."""

    def compute(self, doc: Doc, model_response, **kwargs) -> dict[str, float]:
        # lighteval pads each continuation's token ids with -1 to the longest one's length
        tokens = [[int(t) for t in ids if int(t) >= 0] for ids in model_response.output_tokens]
        return pairs.pair_scores(*pairs.answer_sides(model_response.logprobs, tokens))


def _pair_doc(line: dict, task_name: str, chosen: list[pairs.Pair], eos: str) -> Doc:
    pair = chosen[line["id"]]
    # The prompt is chat-rendered already: the query as it is, for base and chat models alike
    # (lighteval adds no template of its own: override_chat_template=False, smolrecipe.eval.lighteval_session).
    return Doc(task_name=task_name, query=pair.prompt, choices=pairs.continuations(pair, eos), gold_index=0,
               specific={"pair": line["id"]})


def pairs_task(ctx: TaskContext, name: str) -> LightevalTaskConfig:
    """`pairs:<name>` over `limit` of the file's pairs (pairs.select: deterministic; lighteval's
    max_samples would draw a random subset, and the same limit then keeps them all)."""
    eos = ctx.tokenizer.eos_token
    if not eos:
        raise UserError("pairs", "the model's tokenizer has no eos token, which every answer is scored with",
                        "give the tokenizer its end-of-turn token as eos_token, as the preference trainers need")
    chosen = pairs.select(pairs.load_pairs(ctx.pairs[name]), ctx.limit)
    repo = write_local_dataset(({"id": i} for i in range(len(chosen))), ctx.data_dir / f"pairs-{name}", "test")
    return LightevalTaskConfig(
        name=TASK_PREFIX["pairs"] + name, prompt_function=partial(_pair_doc, chosen=chosen, eos=eos), hf_repo=str(repo),
        hf_subset=None, hf_avail_splits=["test"], evaluation_splits=["test"],
        metrics=[SampleLevelMetricGrouping(metric_name=PAIR_METRICS, sample_level_fn=PairScores(), category=SamplingMethod.LOGPROBS,
                                           corpus_level_fn=dict.fromkeys(PAIR_METRICS, np.mean),
                                           higher_is_better=dict.fromkeys(PAIR_METRICS, True))],
    )


def task_of(part: str) -> str:
    """The suite task a lighteval task belongs to: qa:<name> for its .gen and .mc parts, else itself."""
    for suffix in QA_PARTS:
        if part.startswith(TASK_PREFIX["qa"]) and part.endswith(suffix):
            return part.removesuffix(suffix)
    return part


def merge_parts(metrics: dict[str, dict[str, Any]], categories: dict[str, Counter]) -> dict[str, dict[str, Any]]:
    """Per-task results with each qa:<name>'s two lighteval tasks folded into one entry: the rates
    of both (no _stderr: the report computes intervals from a rate and its n), n (the items),
    n_<category> (generated items per category) and n_mc_<category> (items scored by likelihood).
    `categories` counts each lighteval task's documents by category."""
    out: dict[str, dict[str, Any]] = {}
    for name, values in metrics.items():
        task = task_of(name)
        if task == name:
            out[name] = values
            continue
        gen, mc = metrics.get(task + ".gen", {}), metrics.get(task + ".mc", {})
        gen_counts, mc_counts = categories.get(task + ".gen", Counter()), categories.get(task + ".mc", Counter())
        rates = {key: part.get(key) for part, keys in ((gen, QA_GEN_METRICS), (mc, QA_MC_METRICS)) for key in keys}
        counts = {"n": gen.get("n", 0), **{f"n_{c}": gen_counts[c] for c in qa.CATEGORIES},
                  **{f"n_mc_{c}": mc_counts[c] for c in QA_MC_CATEGORIES}}
        out[task] = rates | counts
    return out


# --- the task list --------------------------------------------------------------------------------


def known_tasks(slices: dict[str, Slice], qa_sets: dict[str, Path] | None = None, pair_sets: dict[str, Any] | None = None,
                needle_sets: dict[str, Any] | None = None) -> list[str]:
    return ([TASK_PREFIX["slice"] + s for s in slices] + [TASK_PREFIX["choice"] + t for t in CHOICE_TASKS]
            + ["sft_suite", "gsm8k"] + [TASK_PREFIX["qa"] + q for q in qa_sets or {}]
            + [TASK_PREFIX["pairs"] + p for p in pair_sets or {}] + [TASK_PREFIX["needle"] + n for n in needle_sets or {}])


def hub_dataset(name: str, slices: dict[str, Slice], local: dict[str, Path]) -> str | None:
    """The hub dataset task `name` would download, or None when it reads only local files (a local
    copy, a local slice, the SFT suite, a qa item file, a pair file, a needle haystack)."""
    if name.startswith(TASK_PREFIX["choice"]):
        key = name.removeprefix(TASK_PREFIX["choice"])
        return None if key in local else CHOICE_TASKS[key].hub
    if name == "gsm8k":
        return None if "gsm8k" in local else GSM8K_HUB[0]
    if name.startswith(TASK_PREFIX["slice"]):
        source = slices[name.removeprefix(TASK_PREFIX["slice"])].source
        return source if not Path(source).exists() and HUB_ID.fullmatch(source) else None  # else a (maybe missing) local path
    return None


def build_tasks(ctx: TaskContext, names: list[str]) -> list[LightevalTaskConfig]:
    """lighteval configs for `names` (as listed by known_tasks, less the ppl: slices and needle:
    grids, which smolrecipe.eval.perplexity and smolrecipe.eval.needle score)."""
    configs = []
    for name in names:
        if name.startswith(TASK_PREFIX["choice"]):
            configs.append(choice_task(ctx, CHOICE_TASKS[name.removeprefix(TASK_PREFIX["choice"])]))
        elif name == "sft_suite":
            configs.append(suite_task(ctx))
        elif name == "gsm8k":
            configs.append(gsm8k_task(ctx))
        elif name.startswith(TASK_PREFIX["qa"]) and name.removeprefix(TASK_PREFIX["qa"]) in ctx.qa:
            configs.extend(qa_tasks(ctx, name.removeprefix(TASK_PREFIX["qa"])))
        elif name.startswith(TASK_PREFIX["pairs"]) and name.removeprefix(TASK_PREFIX["pairs"]) in ctx.pairs:
            configs.append(pairs_task(ctx, name.removeprefix(TASK_PREFIX["pairs"])))
        else:
            raise UserError("--tasks", f"unknown task '{name}'", f"use some of {', '.join(known_tasks({}, ctx.qa, ctx.pairs))}")
    return configs
