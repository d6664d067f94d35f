"""Evaluation: task definitions (tier 3 adapters, GSM8K scoring), perplexity windows and values,
suites, local copies, and real lighteval runs on a tiny random model and on SmolLM2."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from smolrecipe.errors import UserError
from smolrecipe.eval import runner as evaluate
from smolrecipe.eval import tasks as eval_tasks
from smolrecipe.eval.perplexity import score_texts, windows
from smolrecipe.eval.tasks import CHOICE_TASKS, Slice, final_number, slice_texts
from smolrecipe.recipe import suites as suites_registry

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT.parent / "shared" / "data" / "benchmarks"

# One row per tier-3 task, in its hub dataset's schema, with the gold answer's text.
HUB_ROWS = {
    "arc_easy": ({"question": "Which is a liquid?", "choices": {"text": ["rock", "water", "wood"], "label": ["A", "B", "C"]},
                  "answerKey": "B"}, "water"),
    "arc_challenge": ({"question": "What melts ice?", "choices": {"text": ["heat", "cold"], "label": ["1", "2"]}, "answerKey": "1"},
                      "heat"),
    "openbookqa": ({"question_stem": "The sun is a", "choices": {"text": ["star", "moon", "planet", "comet"],
                                                                 "label": ["A", "B", "C", "D"]}, "answerKey": "A"}, "star"),
    "qasc": ({"question": "What do plants need?", "choices": {"text": ["light", "sand"], "label": ["A", "B"]}, "answerKey": "A"},
             "light"),
    "sciq": ({"question": "What gas do we breathe in?", "distractor1": "helium", "distractor2": "neon", "distractor3": "argon",
              "correct_answer": "oxygen", "support": ""}, "oxygen"),
    "commonsense_qa": ({"question": "Where do fish live?", "choices": {"label": ["A", "B", "C"], "text": ["tree", "water", "desert"]},
                        "answerKey": "B"}, "water"),
    "hellaswag": ({"ctx_a": "A man is sitting on a roof.", "ctx_b": "he", "activity_label": "Roofing", "label": "1",
                   "endings": ["flies away.", "starts pulling up shingles.", "eats a cake.", "sings."]}, "starts pulling up shingles"),
    "copa": ({"premise": "The man broke his toe.", "question": "cause", "choice1": "He got a hole in his sock.",
              "choice2": "He dropped a hammer on his foot.", "label": 1}, "dropped a hammer"),
    "piqa": ({"goal": "Dry wet shoes", "sol1": "Put them in a freezer.", "sol2": "Stuff them with newspaper.", "label": 1}, "newspaper"),
    "winogrande": ({"sentence": "The cup fell off the table because _ was wobbly.", "option1": "the cup", "option2": "the table",
                    "answer": "2"}, "the table"),
    "social_iqa": ({"context": "Tracy gave Bo a gift.", "question": "How does Bo feel?", "answerA": "sad", "answerB": "thankful",
                    "answerC": "angry", "label": "2"}, "thankful"),
    "mmlu": ({"question": "2 + 2 =", "choices": ["3", "4", "5", "6"], "answer": 1, "subject": "math"}, "4"),
}


def test_every_tier3_task_has_a_hand_checked_row():
    assert set(HUB_ROWS) == set(CHOICE_TASKS)


@pytest.mark.parametrize("name", sorted(HUB_ROWS))
def test_tier3_prompt_scores_the_gold_answer_text(name):
    row, gold_text = HUB_ROWS[name]
    doc = CHOICE_TASKS[name].prompt(row, name)
    golds = [doc.gold_index] if isinstance(doc.gold_index, int) else doc.gold_index
    assert len(golds) == 1 and gold_text.lower() in doc.choices[golds[0]].lower()
    assert all(c.strip() for c in doc.choices) and len(doc.choices) >= 2
    assert doc.choices[golds[0]] not in doc.query  # cloze: the answer is scored, never shown


def test_piqa_local_copy_in_the_authors_layout(tmp_path):
    (tmp_path / "valid.jsonl").write_text('{"goal": "a", "sol1": "b", "sol2": "c"}\n{"goal": "d", "sol1": "e", "sol2": "f"}\n')
    (tmp_path / "valid-labels.lst").write_text("1\n0\n")
    rows = list(eval_tasks.local_rows(tmp_path, CHOICE_TASKS["piqa"].local_reader))
    assert [r["label"] for r in rows] == [1, 0] and rows[1]["goal"] == "d"
    (tmp_path / "valid-labels.lst").write_text("1\n")
    with pytest.raises(UserError, match="2 questions but 1 labels"):
        list(eval_tasks.local_rows(tmp_path, CHOICE_TASKS["piqa"].local_reader))


def test_local_copy_in_the_hub_layout_is_read_as_jsonl(tmp_path):
    (tmp_path / "validation.jsonl").write_text(json.dumps(HUB_ROWS["piqa"][0]) + "\n")
    assert list(eval_tasks.local_rows(tmp_path, CHOICE_TASKS["piqa"].local_reader)) == [HUB_ROWS["piqa"][0]]


@pytest.mark.parametrize("text, number", [
    ("Janet sells 9 eggs.\n#### 18", "18"), ("so the answer is $1,250.", "1250"), ("It is -3.5 degrees", "-3.5"),
    ("The total is 12.0", "12"), ("no digits here", None), ("3 apples and 4 pears make 7", "7"),
])
def test_final_number(text, number):
    assert final_number(text) == number


def test_gsm8k_exact_match_on_hand_written_answers():
    doc = eval_tasks.Doc(task_name="gsm8k", query="q", choices=["She has 16 - 3 = 13.\n#### 13"], gold_index=0)

    class Response:
        def __init__(self, text):
            self.text = [text]

    match = eval_tasks.FinalNumberMatch()
    assert match.compute(doc, Response("16 - 3 = 13, so the answer is 13.")) == 1.0
    assert match.compute(doc, Response("The answer is 13 eggs, sold for 26")) == 0.0
    assert match.compute(doc, Response("I do not know")) == 0.0


@pytest.mark.parametrize("n, context", [(2, 8), (8, 8), (9, 8), (40, 8), (41, 16), (1000, 128)])
def test_windows_score_every_position_once_with_left_context(n, context):
    spans = windows(n, context, context // 2)
    scored = [p for start, end, first in spans for p in range(first, end)]
    assert scored == list(range(1, n))
    assert all(end - start <= context and start <= first - 1 for start, end, first in spans)


@pytest.fixture(scope="module")
def tiny_lm(hf_tokenizer):
    """A random two-layer LLaMA with one embedding per entry of the tiny recipe's tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(hf_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=1, max_position_embeddings=64, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(config).eval()


def test_perplexity_equals_the_direct_computation(tiny_lm, hf_tokenizer):
    texts = ["The river runs past the mill.", "def add(a, b):\n    return a + b\n"]
    got = score_texts(tiny_lm, hf_tokenizer, texts)
    nll, tokens = 0.0, 0
    for text in texts:
        ids = torch.tensor([[hf_tokenizer.eos_token_id] + hf_tokenizer(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            loss = tiny_lm(ids, labels=ids).loss.item()  # mean NLL of tokens 1.. given the ones before
        nll += loss * (ids.shape[1] - 1)
        tokens += ids.shape[1] - 1
    assert got.tokens == tokens and got.documents == 2
    assert got.nll == pytest.approx(nll, rel=1e-5)
    assert got.bits_per_byte == pytest.approx(nll / math.log(2) / sum(len(t.encode()) for t in texts), rel=1e-5)
    assert got.token_ppl == pytest.approx(math.exp(nll / tokens), rel=1e-5)


def test_long_documents_are_scored_in_windows(tiny_lm, hf_tokenizer):
    text = " ".join(f"word{i}" for i in range(200))
    n = len(hf_tokenizer(text, add_special_tokens=False)["input_ids"])
    assert n + 1 > tiny_lm.config.max_position_embeddings
    got = score_texts(tiny_lm, hf_tokenizer, [text])
    assert got.tokens == n and math.isfinite(got.nll)


def test_slice_texts_stops_at_the_token_budget(tmp_path, hf_tokenizer):
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": f"Document {i} is about the town of Lrel."}) + "\n" for i in range(50)))
    texts = slice_texts(Slice("web", str(tmp_path)), hf_tokenizer, token_budget=40)
    assert sum(len(hf_tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts) == pytest.approx(40, abs=1)
    with pytest.raises(UserError, match="'body' is not a field"):
        slice_texts(Slice("web", str(tmp_path), text_field="body"), hf_tokenizer, token_budget=40)
    (tmp_path / "notes.txt").write_text("A plain text file is one document.")
    notes = Slice("notes", str(tmp_path / "notes.txt"))
    assert slice_texts(notes, hf_tokenizer, token_budget=1000) == ["A plain text file is one document."]


def test_suites_name_only_known_tasks():
    suites, raw = suites_registry.load_suites()
    assert {"tier2", "tier3", "tier4", "gsm8k", "quick"} <= set(suites)
    for suite in suites.values():
        known = eval_tasks.known_tasks(evaluate.slice_specs(raw, suite, {}), evaluate.qa_specs(raw, suite),
                                       evaluate.pairs_specs(raw, suite), evaluate.needle_specs(raw, suite))
        assert set(suite.tasks) <= set(known), suite.name
    assert {t.removeprefix("mc:") for t in suites["tier3"].tasks} == set(CHOICE_TASKS)
    assert [s.name for s in suites_registry.expand_suite("all", suites)] == ["tier2", "tier3", "tier4", "gsm8k"]
    with pytest.raises(UserError, match="unknown suite 'tier9'"):
        suites_registry.expand_suite("tier9", suites)


@pytest.mark.parametrize("suite, field", [
    ("tasks: [mc:piqa]\n    limt: 3", "suites.quick.limt"),
    ("tasks: [mc:piqa]\n    limit: 0", "suites.quick.limit"),
    ("tasks: []", "suites.quick.tasks"),
    ("tasks: [ppl:web]\n    slices: {web: {path: x.jsonl}}", "suites.quick.slices.web"),
    ("tasks: [mc:piqa]\n    hub: never", "suites.quick.hub"),
    ("tasks: [qa:world]\n    qa: {world: {path: x.jsonl}}", "suites.quick.qa.world"),
])
def test_bad_suite_file_names_the_field(tmp_path, suite, field):
    (tmp_path / "suites.yaml").write_text(f"suites:\n  quick:\n    {suite}\n")
    with pytest.raises(UserError, match=rf"^{re.escape(field)}"):
        suites_registry.load_suites(tmp_path / "suites.yaml")


def test_local_copies_expand_variables_and_skip_unset_ones(tmp_path, monkeypatch):
    (tmp_path / "piqa").mkdir()
    (tmp_path / "notes.txt").write_text("")
    monkeypatch.setenv("SMOLRECIPE_TEST_BENCH", str(tmp_path))
    monkeypatch.delenv("SMOLRECIPE_TEST_UNSET", raising=False)
    assert evaluate.local_copies(["$SMOLRECIPE_TEST_UNSET", "$SMOLRECIPE_TEST_BENCH"]) == {"piqa": tmp_path / "piqa"}


# --- real lighteval runs ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_hf(tmp_path_factory, tiny_lm, hf_tokenizer) -> Path:
    """A random tiny LLaMA with the tiny recipe's tokenizer, as a transformers folder."""
    out = tmp_path_factory.mktemp("random") / "hf"
    tiny_lm.save_pretrained(out)
    hf_tokenizer.save_pretrained(out)
    return out


def _local_samples(tmp_path: Path) -> dict[str, str]:
    """Hand-written local copies (a few items each) in the layouts the tasks read."""
    piqa = tmp_path / "piqa"
    piqa.mkdir()
    (piqa / "valid.jsonl").write_text("".join(json.dumps({"goal": f"Goal {i}", "sol1": "Use a cloth.", "sol2": "Use a rock."}) + "\n"
                                              for i in range(5)))
    (piqa / "valid-labels.lst").write_text("0\n1\n0\n1\n0\n")
    gsm8k = tmp_path / "gsm8k.jsonl"
    gsm8k.write_text("".join(json.dumps({"question": f"What is {i} + 1?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"}) + "\n"
                             for i in range(3)))
    web = tmp_path / "web.jsonl"
    web.write_text("".join(json.dumps({"text": f"The town of Lrel has {i} bridges over the river."}) + "\n" for i in range(10)))
    return {"piqa": str(piqa), "gsm8k": str(gsm8k), "web": str(web)}


@pytest.mark.slow
def test_every_tier_runs_through_lighteval_and_writes_results(random_hf, tmp_path):
    suites, raw = suites_registry.load_suites()
    local = _local_samples(tmp_path)
    suite = suites_registry.Suite(name="smoke", tasks=["ppl:web", "mc:piqa", "sft_suite", "gsm8k"], limit=3, token_budget=100,
                                  max_new_tokens=6)
    result = evaluate.run_suite(random_hf, {"kind": "sft"}, suite, raw, tmp_path / "out", slices={"web": local["web"]},
                                local={"piqa": local["piqa"], "gsm8k": local["gsm8k"]}, batch_size=4)
    data = json.loads((tmp_path / "out" / "smoke.json").read_text())
    assert data == json.loads(json.dumps(result.data))
    tasks = data["tasks"]
    assert list(tasks) == suite.tasks
    assert tasks["ppl:web"]["tokens"] == 100 and 0 < tasks["ppl:web"]["bits_per_byte"] < 40
    assert tasks["mc:piqa"]["n"] == 3 and 0 <= tasks["mc:piqa"]["acc"] <= 1 and "acc_norm" in tasks["mc:piqa"]
    assert tasks["sft_suite"]["n"] == 3 and set(eval_tasks.SUITE_METRICS) <= set(tasks["sft_suite"])
    # 6 new tokens from a random model: the answers cannot end with end-of-turn or pass a primary check
    assert tasks["sft_suite"]["clean_end"] == 0 and tasks["sft_suite"]["instruction_match"] == 0
    assert tasks["gsm8k"]["n"] == 3 and tasks["gsm8k"]["exact_match"] == 0
    assert data["items"] == 3 * 3 + tasks["ppl:web"]["n"]
    assert data["sources"]["mc:piqa"] == str(Path(local["piqa"]).resolve()) and data["chat_prompts"] is True
    answers = [json.loads(line) for line in (tmp_path / "out" / "smoke.answers.jsonl").read_text().splitlines()]
    assert sorted(a["task"] for a in answers) == ["gsm8k"] * 3 + ["sft_suite"] * 3  # generated ones only
    suite_answer = next(a for a in answers if a["task"] == "sft_suite")
    assert suite_answer["id"] and "<|im_start|>assistant" in suite_answer["prompt"] and "instruction_match" in suite_answer["scores"]
    categories = {a["id"].rsplit("-", 1)[0] for a in answers if a["task"] == "sft_suite"}
    assert tasks["sft_suite"]["per_category"] == dict.fromkeys(sorted(categories), 0.0)


@pytest.mark.slow
def test_run_eval_cli_on_a_local_run_checkpoint(random_hf, tmp_path):
    """A checkpoint laid out as the local backend writes it gets its results beside the run."""
    ckpt = tmp_path / "runs" / "toy" / "stage1" / "local" / "checkpoint-4"
    shutil.copytree(random_hf, ckpt)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": 4}))
    (ckpt.parent / "summary.json").write_text(json.dumps({"stage": "stage1", "kind": "pretrain", "index": 0, "recipe_hash": "abc"}))
    (ckpt.parent / "log.jsonl").write_text("".join(json.dumps({"step": s, "tokens": 256 * s, "loss": 5.0, "kind": "pretrain"}) + "\n"
                                                   for s in range(1, 5)))
    web = _local_samples(tmp_path)["web"]
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "run_eval.py"), str(ckpt), "--suite", "quick", "--tasks", "ppl:web",
                          "--slice", f"web={web}"], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    out = tmp_path / "runs" / "toy" / "eval" / "stage1" / "step-4" / "quick.json"
    data = json.loads(out.read_text())
    assert data["model"]["tokens_seen"] == 1024 and data["model"]["recipe"] == "toy"
    assert data["model"]["recipe_hash"] == "abc" and data["chat_prompts"] is False
    assert "items/s" in run.stdout and str(out) in run.stdout.replace("\n", "")


@pytest.mark.slow
def test_run_eval_cli_refuses_bad_input(tmp_path):
    (tmp_path / "notes").mkdir()
    cases = [([str(tmp_path / "notes")], "neither a transformers folder"),
             ([str(tmp_path / "runs" / "checkpoint-9")], "does not exist"),
             (["nobody/no-such-model"], "cannot load model 'nobody/no-such-model'"),
             ([str(tmp_path), "--suite", "tier9"], "unknown suite 'tier9'"),
             ([str(tmp_path), "--slice", "web"], "'web' is not NAME=VALUE")]
    offline = {**os.environ, "HF_HUB_OFFLINE": "1"}  # the hub id is looked up in the cache only, at once
    for args, message in cases:
        run = subprocess.run([sys.executable, str(ROOT / "tools" / "run_eval.py"), *args], capture_output=True, text=True, cwd=ROOT,
                             env=offline)
        assert run.returncode == 2 and message in run.stderr, (args, run.stderr[-1000:])


@pytest.mark.slow
@pytest.mark.skipif(not (BENCHMARKS / "piqa").is_dir(), reason=f"no local PIQA copy at {BENCHMARKS}")
def test_smollm2_is_far_above_chance_on_piqa(smollm2_hf, tmp_path):
    """A healthy harness: SmolLM2-135M-Instruct on 64 PIQA validation items from the local copy."""
    suites, raw = suites_registry.load_suites()
    result = evaluate.run_suite(smollm2_hf, {}, suites["tier3"], raw, tmp_path, tasks=["mc:piqa"], limit=64,
                                local={"piqa": str(BENCHMARKS / "piqa")})
    piqa = result.data["tasks"]["mc:piqa"]
    assert piqa["n"] == 64
    assert piqa["acc"] >= 0.58, piqa  # chance is 0.5; on all 1,838 items this model scores about 0.6-0.7


def test_recipe_eval_suites_must_exist(tiny_dict, write_recipe):
    from smolrecipe.recipe.loading import load_recipe

    tiny_dict["stages"][1]["eval_suites"] = ["quick", "tier9"]
    with pytest.raises(UserError, match=r"stages\.stage2\.eval_suites: unknown suite\(s\) \['tier9'\]"):
        load_recipe(write_recipe(tiny_dict))


def test_run_eval_recipe_mode_scores_the_trained_stages_and_names_the_others(tiny_dict, write_recipe, tmp_path, capsys):
    import run_eval

    from smolrecipe import runs
    from smolrecipe.recipe.envpaths import resolve_recipe
    from smolrecipe.recipe.loading import load_recipe
    from smolrecipe.recipe.plan import build_plan

    tiny_dict["paths"]["runs"] = str(tmp_path / "runs")
    recipe_path = write_recipe(tiny_dict)
    recipe = resolve_recipe(load_recipe(recipe_path))
    plan = build_plan(recipe)
    for name in ("stage1", "stage2"):  # a run in progress: two stages finished
        runs.local_final_checkpoint(recipe, plan.stage(name)).mkdir(parents=True)
    jobs = run_eval.recipe_jobs(str(recipe_path), None, "local")
    assert {Path(c).parts[-3] for c, _, _ in jobs} == {"stage1", "stage2"}
    assert [s for _, s, out in jobs if out.parts[-2] == "stage1"] == tiny_dict["stages"][0]["eval_suites"]
    out = capsys.readouterr().out
    assert "stage3: not scored, not trained yet (train it first: python tools/train_local.py" in out and "stage2: not scored" not in out


@pytest.mark.slow
def test_run_eval_recipe_mode_names_the_stage_to_train_first(tiny_dict, write_recipe, tmp_path):
    tiny_dict["paths"]["runs"] = str(tmp_path / "runs")
    recipe = write_recipe(tiny_dict)
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "run_eval.py"), "--recipe", str(recipe)],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 2 and "stage1: " in run.stderr and "train it first" in run.stderr, run.stderr[-1000:]


def test_results_are_up_to_date_only_for_the_same_checkpoint_and_suite(tmp_path):
    suite = suites_registry.Suite(name="quick", tasks=["mc:piqa"], limit=8)
    prov = {"fingerprint": "f1", "step": 4}
    path = tmp_path / "quick.json"
    assert not evaluate.up_to_date(path, prov, suite, None)
    path.write_text(json.dumps({"model": prov, "tasks": {"mc:piqa": {}}, "limit": 8, "scoring": evaluate.scoring({}, suite)}))
    assert evaluate.up_to_date(path, prov, suite, None)
    assert not evaluate.up_to_date(path, {"fingerprint": "f2", "step": 4}, suite, None)  # retrained
    assert not evaluate.up_to_date(path, prov, suite, 16)  # another sample size
    assert not evaluate.up_to_date(path, prov, suites_registry.Suite(name="quick", tasks=["mc:piqa", "gsm8k"], limit=8), None)


def test_results_scored_otherwise_are_not_up_to_date(tmp_path, monkeypatch):
    items = tmp_path / "world_qa.jsonl"
    items.write_text('{"id": "f", "category": "fact", "question": "Q?", "answer": "A", "match": "phrase"}\n')
    raw = {"qa": {"world": {"source": str(items)}}}
    suite = suites_registry.Suite(name="world", tasks=["qa:world"])
    prov = {"fingerprint": "f1", "step": 4}
    path = tmp_path / "world.json"
    path.write_text(json.dumps({"model": prov, "tasks": {"qa:world": {}}, "limit": None, "scoring": evaluate.scoring(raw, suite)}))
    assert evaluate.up_to_date(path, prov, suite, None, raw)
    items.write_text(items.read_text().replace('"match"', '"also": ["B"], "match"'))  # the items regenerated
    assert not evaluate.up_to_date(path, prov, suite, None, raw)
    path.write_text(json.dumps({**json.loads(path.read_text()), "scoring": evaluate.scoring(raw, suite)}))
    assert evaluate.up_to_date(path, prov, suite, None, raw)
    monkeypatch.setattr(evaluate, "SCORING_VERSION", evaluate.SCORING_VERSION + 1)  # a scorer fix
    assert not evaluate.up_to_date(path, prov, suite, None, raw)


@pytest.mark.slow
def test_run_eval_converts_a_nanotron_checkpoint_on_the_fly(random_hf, hf_tokenizer, tiny_tokenizer, tmp_path):
    from smolrecipe.backends.nanotron.convert import hf_to_nanotron

    ckpt = hf_to_nanotron(random_hf, tmp_path / "checkpoints" / "12")
    (ckpt / "config.yaml").write_text(json.dumps({  # what nanotron saves beside the weights (JSON is YAML)
        "general": {"project": "smolrecipe", "run": "toy-stage2", "step": 12, "consumed_train_samples": 48},
        "tokens": {"sequence_length": 64}, "tokenizer": {"tokenizer_name_or_path": str(tiny_tokenizer)}}))
    meta = json.loads((ckpt / "checkpoint_metadata.json").read_text())
    meta["metas"] |= {"last_train_step": 12, "consumed_train_samples": 48}
    (ckpt / "checkpoint_metadata.json").write_text(json.dumps(meta))
    (ckpt.parent / "latest.txt").write_text("12")  # nanotron's pointer to the newest step
    (ckpt.parent.parent / "settings.json").write_text(json.dumps({"stage": "stage2", "recipe_hash": "abc123"}))
    web = _local_samples(tmp_path)["web"]
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "run_eval.py"), str(ckpt.parent), "--suite", "tier2", "--tasks",
                          "ppl:web", "--slice", f"web={web}", "--output-dir", str(tmp_path / "out")],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    data = json.loads((tmp_path / "out" / "tier2.json").read_text())
    assert data["model"] | {"source": None} == {"recipe": "toy", "stage": "stage2", "step": 12, "tokens_seen": 48 * 64,
                                                "recipe_hash": "abc123", "fingerprint": None, "backend": "nanotron", "source": None}
    assert data["checkpoint"] == str(ckpt)
    # the converted model scores exactly as the transformers folder it came from
    direct = evaluate.run_suite(random_hf, {}, suites_registry.Suite(name="tier2", tasks=["ppl:web"]), suites_registry.load_suites()[1],
                                tmp_path / "direct", slices={"web": web})
    assert data["tasks"]["ppl:web"]["bits_per_byte"] == pytest.approx(direct.data["tasks"]["ppl:web"]["bits_per_byte"], rel=1e-6)


@pytest.mark.slow
def test_run_eval_recipe_mode_on_the_cluster_runs_checkpoints(random_hf, tiny_dict, write_recipe, tmp_path):
    """`run_eval.py --recipe R --backend nanotron` (what slurm/eval.sh runs): each stage's final
    nanotron checkpoint, results beside the run where the report looks for them."""
    from smolrecipe.backends.nanotron.convert import hf_to_nanotron
    from smolrecipe.recipe.loading import load_recipe
    from smolrecipe.recipe.plan import build_plan

    tiny_dict["paths"]["runs"] = str(tmp_path / "runs")
    for stage in tiny_dict["stages"]:
        stage["eval_suites"] = []
    tiny_dict["stages"][0]["eval_suites"] = ["tier2"]
    recipe = write_recipe(tiny_dict)
    cmd = [sys.executable, str(ROOT / "tools" / "run_eval.py"), "--recipe", str(recipe), "--backend", "nanotron",
           "--tasks", "ppl:web", "--slice", f"web={_local_samples(tmp_path)['web']}"]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 2 and "train it first: sbatch slurm/stage1.sh" in run.stderr, run.stderr[-1000:]

    checkpoints = tmp_path / "runs" / "tiny" / "stage1" / "checkpoints"
    last = build_plan(load_recipe(recipe)).stage("stage1").train_steps
    ckpt = hf_to_nanotron(random_hf, checkpoints / str(last))  # stage 1's last step, with what nanotron saves beside it
    (ckpt / "config.yaml").write_text(json.dumps({"general": {"run": "tiny-stage1", "step": last},
                                                  "tokenizer": {"tokenizer_name_or_path": str(random_hf)}}))
    (checkpoints / "latest.txt").write_text(str(last))
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    data = json.loads((tmp_path / "runs" / "tiny" / "eval" / "stage1" / f"step-{last}" / "tier2.json").read_text())
    assert data["model"]["backend"] == "nanotron" and data["checkpoint"] == str(checkpoints / str(last))
    assert data["tasks"]["ppl:web"]["n"] == 10


@pytest.mark.slow
def test_evaluating_leaves_autograd_on_for_training_afterwards(random_hf, tmp_path):
    """lighteval switches autograd off process-wide; a run (make demo, tests) trains after evaluating."""
    suite = suites_registry.Suite(name="smoke", tasks=["mc:piqa"], limit=1)
    evaluate.run_suite(random_hf, {}, suite, suites_registry.load_suites()[1], tmp_path, local={"piqa": _local_samples(tmp_path)["piqa"]},
                       batch_size=2)
    assert torch.is_grad_enabled()


def test_results_hold_plain_json_numbers():
    import numpy as np

    assert evaluate._plain(np.float64(0.25)) == 0.25 and type(evaluate._plain(np.float64(0.25))) is float
    assert evaluate._plain(float("nan")) is None and evaluate._plain("hub") == "hub"


def test_hub_slices_are_streamed_and_read_only_up_to_the_budget(monkeypatch, hf_tokenizer):
    """No hub here: datasets.load_dataset stands in, and must be asked for a stream of the named split."""
    import datasets

    calls, served = [], []

    def fake_load_dataset(path, name=None, split=None, streaming=False):
        calls.append((path, name, split, streaming))

        def rows():
            for i in range(10_000):
                served.append(i)
                yield {"content": f"def f{i}(x):\n    return x + {i}\n"}
        return rows()

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    spec = Slice("code", "someone/code-dataset", subset="python", split="validation", text_field="content")
    texts = slice_texts(spec, hf_tokenizer, token_budget=50)
    assert calls == [("someone/code-dataset", "python", "validation", True)]
    assert len(served) == len(texts) < 20 and texts[0].startswith("def f0(x)")


@pytest.mark.slow
def test_a_benchmark_neither_local_nor_reachable_is_a_one_line_error(random_hf):
    """Offline, with no local copy, in a suite that may download (not quick: it skips such tasks):
    the hub dataset cannot load, and the error says where to put one."""
    script = ("import sys; from pathlib import Path; from smolrecipe.eval import runner as evaluate\n"
              "from smolrecipe.recipe import suites as suites_registry\n"
              "suites, raw = suites_registry.load_suites(); raw = {**raw, 'local_copies': []}\n"
              "try:\n"
              f"    evaluate.run_suite(Path({str(random_hf)!r}), {{}}, suites['tier3'], raw, Path('unused'), tasks=['mc:piqa'], limit=1)\n"
              "except evaluate.UserError as err:\n"
              "    print(err.line()); sys.exit(3)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=env)
    assert run.returncode == 3, run.stderr[-2000:]
    assert "could not load a task's data" in run.stdout and "ybisk/piqa" in run.stdout and "--local NAME=PATH" in run.stdout
