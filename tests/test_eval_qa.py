"""Closed-book QA (`qa:<name>`): the scorers, the item file's checks, the limit, the merged
results; and a `hub: skip` suite (quick) that runs offline, skipping a benchmark with no local
copy. The slow tests run the task through lighteval on SmolLM2-135M-Instruct."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from smolrecipe.errors import UserError
from smolrecipe.eval import qa
from smolrecipe.eval import runner as evaluate
from smolrecipe.eval import tasks as eval_tasks
from smolrecipe.recipe import suites as suites_registry

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT.parent / "shared" / "data" / "benchmarks"

# Two items per category; fact-paris and arith-sum have choices the model cannot get wrong.
ITEMS = [
    {"id": "fact-paris", "category": "fact", "question": "What is the capital of France?", "answer": "Paris", "match": "phrase",
     "wrong": ["London", "Berlin", "Madrid"], "cloze": "The capital of France is", "choices": ["Paris", "Banana", "Seven", "Blue"],
     "gold": 0},
    {"id": "arith-sum", "category": "arithmetic", "question": "What is 2 + 3?", "answer": "5", "match": "number",
     "cloze": "2 + 3 =", "choices": ["5", "9", "12", "40"], "gold": 0},
    {"id": "format-bullets", "category": "format", "question": "List three colours as a bulleted list.", "match": "check",
     "check": {"kind": "bullet_count", "n": 3}},
    {"id": "fact-earth", "category": "fact", "question": "Which planet do we live on?", "answer": "Earth", "match": "phrase",
     "wrong": ["Mars", "Venus"], "cloze": "We live on the planet", "choices": ["Earth", "Mars", "Jupiter"], "gold": 0},
    {"id": "arith-minus", "category": "arithmetic", "question": "What is 10 minus 4?", "answer": "6", "match": "number"},
    {"id": "format-json", "category": "format", "question": 'Reply with a JSON object that has the key "name".', "match": "check",
     "check": {"kind": "json_keys", "keys": ["name"]}},
]


def write_items(path: Path, items: list[dict]) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path


@pytest.fixture
def item_file(tmp_path) -> Path:
    return write_items(tmp_path / "world_qa.jsonl", ITEMS)


# --- scoring ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, ok", [
    ("Paris", True), ("The capital is PARIS.", True), ("paris!", True), ("It's Paris, of course", True),
    ("Parisian food", False),  # whole words only
    ("Paris, not London", False),  # a wrong phrase appears too
    ("London", False), ("", False),
])
def test_phrase_match_normalises_and_refuses_wrong_phrases(text, ok):
    assert qa.phrase_match(text, "Paris", ("London", "Berlin")) is ok


def test_phrase_match_of_several_words_across_case_punctuation_and_lines():
    assert qa.normalise("  The River\n LUNE — flows; ") == "the river lune flows"
    assert qa.phrase_match("It flows into the river\nLune.", "River Lune")
    assert qa.phrase_match("the river-lune", "River Lune")
    assert not qa.phrase_match("the river Lunes", "River Lune")
    assert not qa.phrase_match("Lune, then the Wend", "Lune", ("Wend",))


@pytest.mark.parametrize("text, ok", [
    ("On Saturdays.", True), ("Every Saturday", True),  # the answer, or another phrase that names it
    ("On Mondays.", False), ("On Saturdays or Mondays", False),  # a wrong phrase, in either form, fails
    ("Saturdayish", False),
])
def test_phrase_match_takes_the_items_other_phrases(text, ok):
    assert qa.phrase_match(text, "Saturday", ("Monday", "Mondays"), ("Saturdays",)) is ok


@pytest.mark.parametrize("text, answer, ok", [
    ("The answer is 42.", "42", True), ("2 + 3 = 5", "5", True), ("It costs 1,250 coins", "1250", True),
    ("12.0", "12", True), ("-3.5 degrees", "-3.5", True), ("5 apples and 2 pears", "5", False),  # the final number counts
    ("five", "5", False), ("", "5", False),
])
def test_number_match_reads_the_final_number(text, answer, ok):
    assert qa.number_match(text, answer) is ok


def test_check_items_use_the_sft_suite_checks(item_file):
    items = {item.id: item for item in qa.load_items(item_file)}
    assert items["format-bullets"].passes("- red\n- green\n- blue")
    assert not items["format-bullets"].passes("1. red\n2. green\n3. blue")
    assert items["format-json"].passes('```json\n{"name": "Ada"}\n```')
    assert not items["format-json"].passes('{"title": "Ada"}')
    assert items["fact-paris"].passes("Paris.") and items["arith-sum"].passes("5") and not items["arith-minus"].passes("4")
    assert items["format-bullets"].expected == {"kind": "bullet_count", "n": 3} and items["fact-paris"].expected == "Paris"


# --- the item file -------------------------------------------------------------------------------


def _changed(index: int, **changes) -> list[dict]:
    items = [dict(item) for item in ITEMS]
    for key, value in changes.items():
        if value is None:
            items[index].pop(key, None)
        else:
            items[index][key] = value
    return items


@pytest.mark.parametrize("items, line, field, message", [
    (_changed(0, question=None), 1, "question", "is missing"),
    (_changed(0, source="gen"), 1, "source", "is not a field of a QA item"),
    (_changed(1, category="maths"), 2, "category", "'maths'"),
    (_changed(2, match="phrase"), 3, "match", "'phrase' for a format item"),
    (_changed(0, match="check"), 1, "match", "'check' for a fact item"),
    (_changed(1, answer=5), 2, "answer", "is 5"),
    (_changed(1, answer="five"), 2, "answer", "'five' is not a number"),
    (_changed(0, answer=None), 1, "answer", "is None"),
    (_changed(0, wrong=["Paris Basin"]), 1, "wrong", "contains the answer"),
    (_changed(0, wrong="London"), 1, "wrong", "is 'London'"),
    (_changed(1, wrong=["6"]), 2, "wrong", "is given for a number item"),
    (_changed(1, also=["6"]), 2, "also", "is given for a number item"),
    (_changed(2, also=["x"]), 3, "also", "is given for a check item"),
    (_changed(0, also="Parisian"), 1, "also", "is 'Parisian'"),
    (_changed(0, also=["London"]), 1, "wrong", "'London' contains the answer 'London'"),
    (_changed(2, check={"kind": "bullet_count"}), 3, "check", "is missing n"),
    (_changed(2, check={"kind": "clean_end"}), 3, "check.kind", "'clean_end'"),
    (_changed(2, check={"kind": "forbids", "substrings": ["x"]}), 3, "check.kind", "'forbids'"),
    (_changed(2, check={"type": "bullet_count", "n": 3}), 3, "check", "is {'type'"),
    (_changed(2, check={"kind": "bullet_count", "n": 0}), 3, "check", "bullet_count.n is 0"),
    (_changed(2, answer="red"), 3, "answer", "is given for a check item"),
    (_changed(0, gold=None), 1, "gold", "is missing"),
    (_changed(0, gold=4), 1, "gold", "is 4"),
    (_changed(0, choices=["Paris"]), 1, "choices", "is ['Paris']"),
    (_changed(0, choices=["Paris", "Paris"]), 1, "choices", "repeats"),
    (_changed(2, cloze="A list:", choices=["a", "b"], gold=0), 3, "cloze", "is given for a format item"),
    (_changed(4, id="arith-sum"), 5, "id", "also the id on line 2"),
])
def test_a_bad_item_is_one_line_naming_file_line_and_field(tmp_path, items, line, field, message):
    path = write_items(tmp_path / "qa.jsonl", items)
    with pytest.raises(UserError) as err:
        qa.load_items(path)
    assert err.value.field == f"{path} line {line}, {field}" and message in err.value.problem, err.value.line()
    assert "\n" not in err.value.line() and err.value.fix


def test_unreadable_item_files(tmp_path):
    with pytest.raises(UserError, match="no such QA item file.*make_demo_corpus"):
        qa.load_items(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(UserError, match="holds no items"):
        qa.load_items(tmp_path / "empty.jsonl")
    (tmp_path / "bad.jsonl").write_text(json.dumps(ITEMS[0]) + "\n{not json\n")
    with pytest.raises(UserError, match=r"bad.jsonl line 2, line: is not JSON"):
        qa.load_items(tmp_path / "bad.jsonl")
    (tmp_path / "list.jsonl").write_text("[1, 2]\n")
    with pytest.raises(UserError, match=r"list.jsonl line 1, line: is a JSON list"):
        qa.load_items(tmp_path / "list.jsonl")


def test_the_limit_takes_the_categories_in_turn(item_file):
    items = qa.load_items(item_file)
    ids = lambda chosen: [item.id for item in chosen]  # noqa: E731
    assert ids(qa.select(items, None)) == ids(items) == ids(qa.select(items, 6)) == ids(qa.select(items, 99))
    assert ids(qa.select(items, 3)) == ["fact-paris", "arith-sum", "format-bullets"]
    assert ids(qa.select(items, 4)) == ["fact-paris", "arith-sum", "format-bullets", "fact-earth"]  # file order
    assert ids(qa.select(items, 1)) == ["fact-paris"]
    many_facts = [items[0], items[3], qa.QAItem("fact-3", "fact", "Q?", "phrase", answer="A"), items[1], items[2]]
    assert ids(qa.select(many_facts, 4)) == ["fact-paris", "fact-earth", "arith-sum", "format-bullets"]
    assert ids(qa.select(many_facts, 5)) == ids(many_facts)  # the categories that ran out leave their turns to the rest
    assert ids(qa.select(many_facts[:3] + many_facts[4:], 3)) == ["fact-paris", "fact-earth", "format-bullets"]


# --- lighteval scorers and the merged result -------------------------------------------------------


class Response:
    def __init__(self, text: str = "", logprobs=(), tokens=()):
        self.text, self.logprobs, self.output_tokens = [text], list(logprobs), [list(t) for t in tokens]


def test_generation_and_choice_scores_per_item(item_file):
    items = {item.id: item for item in qa.load_items(item_file)}
    gen = eval_tasks.QAGenerationScores(items)
    doc = eval_tasks._qa_gen_doc({"id": "fact-paris"}, "qa:world.gen", items, tokenizer=None, chat=False)
    assert doc.query == "Question: What is the capital of France?\nAnswer:"
    scores = gen.compute(doc, Response(" Paris."))
    assert scores["em"] == scores["em_fact"] == 1.0 and math.isnan(scores["em_arithmetic"]) and math.isnan(scores["pass_format"])
    doc = eval_tasks._qa_gen_doc({"id": "format-bullets"}, "qa:world.gen", items, tokenizer=None, chat=False)
    assert gen.compute(doc, Response("- a\n- b"))["pass_format"] == 0.0

    doc = eval_tasks._qa_mc_doc({"id": "fact-earth"}, "qa:world.mc", items)
    assert doc.query == "We live on the planet" and doc.choices == [" Earth", " Mars", " Jupiter"] and doc.gold_index == 0
    scores = eval_tasks.QAChoiceScores().compute(doc, Response(logprobs=[-1.0, -2.0, -3.0], tokens=[[1], [2], [3]]))
    assert scores["mc_fact"] == 1.0 and scores["chance_fact"] == pytest.approx(1 / 3) and math.isnan(scores["mc_arithmetic"])
    scores = eval_tasks.QAChoiceScores().compute(doc, Response(logprobs=[-3.0, -2.0, -1.0], tokens=[[1], [2], [3]]))
    assert scores["mc_fact"] == 0.0 and scores["mc_norm_fact"] == 0.0


def test_merge_folds_both_parts_into_one_task():
    from collections import Counter

    metrics = {"mc:piqa": {"acc": 0.5, "n": 4},
               "qa:world.gen": {"em": 0.5, "em_stderr": 0.1, "em_fact": 1.0, "em_arithmetic": 0.0, "pass_format": 0.5, "n": 6},
               "qa:world.mc": {"mc_fact": 1.0, "mc_arithmetic": 0.0, "mc_norm_fact": 1.0, "mc_norm_arithmetic": 0.0,
                               "chance_fact": 0.29, "chance_arithmetic": 0.25, "n": 3}}
    categories = {"qa:world.gen": Counter(fact=2, arithmetic=2, format=2), "qa:world.mc": Counter(fact=2, arithmetic=1)}
    merged = eval_tasks.merge_parts(metrics, categories)
    assert list(merged) == ["mc:piqa", "qa:world"] and merged["mc:piqa"] == metrics["mc:piqa"]
    assert merged["qa:world"] == {"em": 0.5, "em_fact": 1.0, "em_arithmetic": 0.0, "pass_format": 0.5, "mc_fact": 1.0,
                                  "mc_arithmetic": 0.0, "mc_norm_fact": 1.0, "mc_norm_arithmetic": 0.0, "chance_fact": 0.29,
                                  "chance_arithmetic": 0.25, "n": 6, "n_fact": 2, "n_arithmetic": 2, "n_format": 2,
                                  "n_mc_fact": 2, "n_mc_arithmetic": 1}
    no_choices = eval_tasks.merge_parts({"qa:world.gen": metrics["qa:world.gen"]}, {"qa:world.gen": Counter(format=6)})
    assert no_choices["qa:world"]["mc_fact"] is None and no_choices["qa:world"]["n_mc_fact"] == 0
    assert no_choices["qa:world"]["n_format"] == 6 and no_choices["qa:world"]["n_fact"] == 0


# --- suites: qa files and hub: skip ----------------------------------------------------------------


def test_suites_file_has_the_world_suite_and_an_offline_quick_suite(monkeypatch):
    suites, raw = suites_registry.load_suites()
    assert suites["world"].tasks == ["qa:world"] and "qa:world" not in suites["quick"].tasks  # the tiny recipe runs world itself
    assert suites["quick"].hub == "skip" and all(suites[name].hub == "download" for name in ("tier2", "tier3", "gsm8k", "world"))
    monkeypatch.delenv("SMOLRECIPE_DATA", raising=False)
    assert evaluate.qa_specs(raw, suites["world"]) == {"world": ROOT / "runs" / "data" / "corpus" / "world_qa.jsonl"}
    monkeypatch.setenv("SMOLRECIPE_DATA", "runs/data_probe")  # the items follow the corpus, as the recipe's paths do
    assert evaluate.qa_specs(raw, suites["world"]) == {"world": ROOT / "runs" / "data_probe" / "corpus" / "world_qa.jsonl"}
    quick = {name: s.source for name, s in evaluate.slice_specs(raw, suites["quick"], {}).items()}
    assert quick == {"web": "runs/data_probe/heldout/prose", "code": "runs/data_probe/heldout/python_functions",
                     "math": "runs/data_probe/heldout/arithmetic"}
    own = suites_registry.Suite(name="mine", tasks=["qa:world"], qa={"world": {"source": "/data/w.jsonl"}})
    assert evaluate.qa_specs(raw, own) == {"world": Path("/data/w.jsonl")}
    monkeypatch.delenv("SMOLRECIPE_UNSET_FOR_TEST", raising=False)  # listed, not read: left as written
    unset = suites_registry.Suite(name="mine", tasks=["qa:world"], qa={"world": {"source": "/${SMOLRECIPE_UNSET_FOR_TEST}/w.jsonl"}})
    assert evaluate.qa_specs(raw, unset) == {"world": Path("/${SMOLRECIPE_UNSET_FOR_TEST}/w.jsonl")}


def test_hub_skip_skips_only_what_would_download(tmp_path):
    suites, raw = suites_registry.load_suites()
    raw = {**raw, "local_copies": [str(tmp_path / "bench")]}
    quick = suites["quick"]
    specs = evaluate.slice_specs(raw, quick, {"web": "HuggingFaceFW/fineweb-edu", "code": str(tmp_path)})
    names = ["ppl:web", "ppl:code", "mc:piqa", "gsm8k", "sft_suite", "qa:world"]
    skipped = evaluate.hub_skips(names, quick, raw, specs, {})
    assert list(skipped) == ["ppl:web", "mc:piqa", "gsm8k"]
    assert skipped["mc:piqa"].startswith(f"no local copy of piqa in {tmp_path / 'bench'}; put one there")
    assert "--slice web=PATH" in skipped["ppl:web"]
    assert evaluate.hub_skips(names, quick, raw, specs, {"piqa": tmp_path, "gsm8k": tmp_path}) == {"ppl:web": skipped["ppl:web"]}
    assert evaluate.hub_skips(names, suites["tier3"], raw, specs, {}) == {}  # the other suites download


def test_skipped_tasks_count_as_done_until_a_copy_appears(tmp_path):
    bench = tmp_path / "bench"
    bench.mkdir()
    raw = {"local_copies": [str(bench)]}
    suite = suites_registry.Suite(name="quick", tasks=["mc:piqa", "sft_suite"], limit=8, hub="skip")
    prov = {"fingerprint": "f1", "step": 4}
    path = tmp_path / "quick.json"
    path.write_text(json.dumps({"model": prov, "tasks": {"sft_suite": {}}, "limit": 8, "skipped": {"mc:piqa": "no local copy"},
                                "scoring": evaluate.scoring(raw, suite)}))
    assert evaluate.up_to_date(path, prov, suite, None, raw)
    assert not evaluate.up_to_date(path, prov, suite, None, raw, local={"piqa": str(tmp_path)})
    (bench / "piqa").mkdir()
    assert not evaluate.up_to_date(path, prov, suite, None, raw)


# --- real lighteval runs ---------------------------------------------------------------------------


def _by_task(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_qa_runs_through_lighteval_on_smollm2(smollm2_hf, item_file, tmp_path):
    suites, raw = suites_registry.load_suites()
    raw = {**raw, "qa": {"world": {"source": str(item_file)}}}
    result = evaluate.run_suite(smollm2_hf, {}, suites["world"].model_copy(update={"max_new_tokens": 16}), raw, tmp_path / "chat",
                                batch_size=6)
    data = json.loads((tmp_path / "chat" / "world.json").read_text())
    assert data == json.loads(json.dumps(result.data)) and data["chat_prompts"] is True and "skipped" not in data
    world = data["tasks"]["qa:world"]
    assert list(world) == ["em", "em_fact", "em_arithmetic", "pass_format", "mc_fact", "mc_arithmetic", "mc_norm_fact",
                           "mc_norm_arithmetic", "chance_fact", "chance_arithmetic", "n", "n_fact", "n_arithmetic", "n_format",
                           "n_mc_fact", "n_mc_arithmetic"]
    assert (world["n"], world["n_fact"], world["n_arithmetic"], world["n_format"]) == (6, 2, 2, 2)
    assert (world["n_mc_fact"], world["n_mc_arithmetic"]) == (2, 1) and data["items"] == 6
    assert world["chance_fact"] == pytest.approx((1 / 4 + 1 / 3) / 2) and world["chance_arithmetic"] == 0.25
    assert world["mc_fact"] == 1.0, world  # Paris after "The capital of France is", Earth after "We live on the planet"
    assert data["sources"]["qa:world"] == str(item_file)

    answers = _by_task(tmp_path / "chat" / "world.answers.jsonl")
    assert sorted(a["id"] for a in answers) == sorted(item["id"] for item in ITEMS) and {a["task"] for a in answers} == {"qa:world"}
    items = {item.id: item for item in qa.load_items(item_file)}
    for answer in answers:  # each answer's score is the scorer's verdict on its text, and the rates are their means
        item = items[answer["id"]]
        assert answer["category"] == item.category and answer["expected"] == item.expected
        assert answer["scores"]["em"] == float(item.passes(answer["answer"])) and "<|im_start|>assistant" in answer["prompt"]
    for key, category in (("em_fact", "fact"), ("em_arithmetic", "arithmetic"), ("pass_format", "format")):
        passed = [a["scores"]["em"] for a in answers if a["category"] == category]
        assert world[key] == pytest.approx(sum(passed) / len(passed))
    assert world["em"] == pytest.approx(sum(a["scores"]["em"] for a in answers) / 6)


@pytest.mark.slow
def test_a_bad_item_file_stops_the_suite_before_any_work(smollm2_hf, tmp_path):
    suites, raw = suites_registry.load_suites()
    path = write_items(tmp_path / "qa.jsonl", _changed(1, answer="five"))
    raw = {**raw, "qa": {"world": {"source": str(path)}}}
    with pytest.raises(UserError, match=r"qa.jsonl line 2, answer: 'five' is not a number"):
        evaluate.run_suite(smollm2_hf, {}, suites["world"], raw, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_quick_runs_offline_and_records_the_benchmark_it_skipped(smollm2_hf, item_file, tmp_path, capsys):
    """Also: a base model is asked in plain text, and a limit keeps every category."""
    suites, raw = suites_registry.load_suites()
    (tmp_path / "empty").mkdir()
    raw = {**raw, "local_copies": [str(tmp_path / "empty")], "qa": {"world": {"source": str(item_file)}}}
    quick = suites["quick"].model_copy(update={"max_new_tokens": 4})
    result = evaluate.run_suite(smollm2_hf, {"kind": "pretrain"}, quick, raw, tmp_path / "out", tasks=["mc:piqa", "qa:world"], limit=3,
                                batch_size=6)
    data = json.loads((tmp_path / "out" / "quick.json").read_text())
    assert list(data["tasks"]) == ["qa:world"] and data["chat_prompts"] is False and data["limit"] == 3
    world = data["tasks"]["qa:world"]
    assert (world["n"], world["n_fact"], world["n_arithmetic"], world["n_format"], world["n_mc_fact"]) == (3, 1, 1, 1, 1)
    prompts = {a["id"]: a["prompt"] for a in _by_task(tmp_path / "out" / "quick.answers.jsonl")}
    assert prompts == {"fact-paris": "Question: What is the capital of France?\nAnswer:", "arith-sum": "Question: What is 2 + 3?\nAnswer:",
                       "format-bullets": "Question: List three colours as a bulleted list.\nAnswer:"}
    note = f"no local copy of piqa in {tmp_path / 'empty'}; put one there (or pass --local piqa=PATH) to run it"
    assert data["skipped"] == {"mc:piqa": f"{note} instead of downloading ybisk/piqa"}
    assert f"quick: skipping mc:piqa: {note}" in capsys.readouterr().out
    assert "1 skipped" in result.line()


@pytest.mark.slow
@pytest.mark.skipif(not (BENCHMARKS / "piqa").is_dir(), reason=f"no local PIQA copy at {BENCHMARKS}")
def test_quick_runs_a_benchmark_whose_copy_is_there(smollm2_hf, tmp_path):
    suites, raw = suites_registry.load_suites()
    raw = {**raw, "local_copies": [str(BENCHMARKS)]}
    result = evaluate.run_suite(smollm2_hf, {}, suites["quick"], raw, tmp_path, tasks=["mc:piqa"], limit=2, batch_size=4)
    assert "skipped" not in result.data and result.data["tasks"]["mc:piqa"]["n"] == 2
    assert result.data["sources"]["mc:piqa"] == str((BENCHMARKS / "piqa").resolve())
