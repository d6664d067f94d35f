"""The demo corpus: deterministic, prefix-stable, well-formed, correct where it can be checked,
varied enough to learn from, with a known share of near-duplicates, and written atomically."""

from __future__ import annotations

import ast
import doctest
import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from demo import corpus
from demo.corpus import (
    DEFAULT_DOCUMENTS,
    PROSE_NEAR_DUPLICATE_RATE,
    QUIZ_LAYOUTS,
    QUIZ_QUESTIONS,
    SOURCES,
    generate_records,
    record_characters,
    world,
    write_demo_corpus,
)

SMALL = 0.05  # scale for the writing tests: every source, a few hundred records at most
STEP = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)(?: remainder (\d+))?")
# the arithmetic prompts of the chats and preference pairs: "What is a op b?", "Compute a op b.", "a op b = ?", ...
SUM_PROMPT = re.compile(r"(?:What is |Compute |Calculate )?(\d+) ([-+*]) (\d+)(?:\?|\.| = \?)(?: Answer with the number only\.)?")


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _read_source(folder: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(folder.glob("*.jsonl")) for line in path.read_text().splitlines()]


def _check_step(line: str) -> tuple[int, int, int]:
    """Recompute one 'a op b = c [remainder r]'; return (a, b, result)."""
    m = STEP.search(line)
    assert m, line
    a, op, b, c, rem = m.groups()
    a, b, c = int(a), int(b), int(c)
    if op == "/":
        assert (c, int(rem)) == divmod(a, b), line
    else:
        assert c == {"+": a + b, "-": a - b, "*": a * b}[op], line
        assert rem is None, line
    return a, b, c


# ---------------------------------------------------------------------------------------------
# determinism and schema
# ---------------------------------------------------------------------------------------------

def test_same_seed_writes_identical_bytes_and_another_seed_differs(tmp_path):
    write_demo_corpus(tmp_path / "a", seed=3, scale=SMALL)
    write_demo_corpus(tmp_path / "b", seed=3, scale=SMALL)
    write_demo_corpus(tmp_path / "c", seed=4, scale=SMALL)
    a, b, c = (_files(tmp_path / name) for name in "abc")
    assert a == b
    assert a.keys() == c.keys()
    for source in SOURCES:
        assert a[f"{source}/00000.jsonl"] != c[f"{source}/00000.jsonl"], source


def test_records_do_not_depend_on_string_hash_randomisation():
    """Set iteration order changes with PYTHONHASHSEED; the corpus must not."""
    code = ("import hashlib, json; from demo.corpus import SOURCES, generate_records; "
            "print(hashlib.sha256(json.dumps([list(generate_records(s, 150, 3)) for s in SOURCES]).encode()).hexdigest())")
    digests = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={"PYTHONHASHSEED": str(h), "PATH": ""}, cwd=Path(__file__).resolve().parent.parent).stdout
               for h in (1, 2)}
    assert len(digests) == 1 and len(digests.pop().strip()) == 64


@pytest.mark.parametrize("source", SOURCES)
def test_records_are_prefix_stable(source):
    assert list(generate_records(source, 40, seed=7)) == list(generate_records(source, 90, seed=7))[:40]


@pytest.mark.parametrize("source", SOURCES)
def test_record_schema(source):
    for i, record in enumerate(generate_records(source, 300, seed=0)):
        assert record["id"] == f"{source}-{i}"
        if source == "chats":
            assert set(record) == {"id", "messages"}
            assert all(set(m) == {"role", "content"} and m["content"].strip() for m in record["messages"])
        elif source == "preferences":
            assert set(record) == {"id", "prompt", "chosen", "rejected", "rejected_kind"}
            for answer in (record["chosen"], record["rejected"]):  # ultrafeedback_binarized's train_prefs layout
                assert [m["role"] for m in answer] == ["user", "assistant"] and all(set(m) == {"role", "content"} for m in answer)
                assert answer[0]["content"] == record["prompt"] and answer[-1]["content"].strip() == answer[-1]["content"] != ""
            assert record["chosen"] != record["rejected"] and record["rejected_kind"] in corpus.REJECTED_KINDS
        else:
            assert set(record) == {"id", "text"}
            assert isinstance(record["text"], str) and record["text"].strip()


def test_unknown_source_is_refused():
    with pytest.raises(ValueError, match="unknown source"):
        next(generate_records("poetry", 1, 0))


# ---------------------------------------------------------------------------------------------
# correctness of the checkable sources
# ---------------------------------------------------------------------------------------------

def test_chats_alternate_end_with_the_assistant_and_stay_short():
    chats = [r["messages"] for r in generate_records("chats", DEFAULT_DOCUMENTS["chats"], seed=0)]
    fits = 0
    for messages in chats:
        roles = [m["role"] for m in messages]
        if roles[0] == "system":
            roles = roles[1:]
        assert roles and len(roles) % 2 == 0 and 1 <= len(roles) // 2 <= 3, roles
        assert roles == ["user", "assistant"] * (len(roles) // 2), roles
        assert all(len(m["content"]) <= 400 for m in messages)
        # ~4 characters a token plus the chat template's few header tokens per message
        fits += sum(len(m["content"]) / 4 + 5 for m in messages) + 1 <= 128
    assert fits / len(chats) >= 0.9
    assert 0.15 < sum(m[0]["role"] == "system" for m in chats) / len(chats) < 0.45


def test_chat_answers_are_correct_where_checkable():
    towns = {t.name: t for t in world().towns}
    kinds = Counter()
    for record in generate_records("chats", 2000, seed=1):
        messages = [m for m in record["messages"] if m["role"] != "system"]
        for user, assistant in zip(messages[::2], messages[1::2], strict=True):
            prompt, answer = user["content"], assistant["content"]
            for line in answer.splitlines():
                if STEP.search(line):
                    _check_step(line)
                    kinds["arithmetic"] += 1
            if m := re.fullmatch(r"Reply with exactly: (.+)", prompt):
                assert answer == m.group(1)
                kinds["exact"] += 1
            if m := re.match(r"(?:List|Give me a bulleted list of|Write) (\w+) ", prompt):
                if m.group(1) in corpus.NUMBER_WORDS:
                    lines = answer.splitlines()
                    assert len(lines) == corpus.NUMBER_WORDS.index(m.group(1)) and all(x.startswith("- ") for x in lines)
                    kinds["list"] += 1
            if m := re.fullmatch(r"(\d+) ([-+*]) (\d+) = \?", prompt):
                assert answer.split()[-1] == str(eval(f"{m.group(1)} {m.group(2)} {m.group(3)}"))  # digits and one operator
            if m := re.fullmatch(r"Which river flows through (\w+)\?", prompt):
                assert answer in (f"{m.group(1)} lies on the River {towns[m.group(1)].river}.", f"The River {towns[m.group(1)].river}.")
                kinds["fact"] += 1
            if prompt.startswith("Write a Python function") or prompt.startswith("In Python:"):
                ast.parse(answer.removeprefix("```python\n").removesuffix("\n```"))
                kinds["python"] += 1
    assert min(kinds.values()) >= 20 and len(kinds) == 5, kinds


def _preference_answers(seed: int = 0) -> list[tuple[str, str, str, str]]:
    """(prompt, chosen, rejected, rejected kind) of the default number of preference pairs."""
    return [(r["prompt"], r["chosen"][-1]["content"], r["rejected"][-1]["content"], r["rejected_kind"])
            for r in generate_records("preferences", DEFAULT_DOCUMENTS["preferences"], seed)]


def test_preference_kinds_are_evenly_mixed_and_fit_the_sequence_length():
    pairs = _preference_answers()
    kinds = Counter(kind for *_, kind in pairs)
    assert set(kinds) == set(corpus.REJECTED_KINDS) and min(kinds.values()) / len(pairs) > 0.28, kinds
    room = corpus.PREFERENCE_MAX_TOKENS - corpus._TEMPLATE_TOKENS  # for user turn + answer, in rough_tokens
    for prompt, chosen, rejected, kind in pairs:
        assert chosen != rejected
        for answer in (chosen, rejected):
            assert corpus.rough_tokens(prompt) + corpus.rough_tokens(answer) <= room, (prompt, answer)
        if kind == "rambling":  # runs on past an answer
            assert len(chosen) < len(rejected) <= corpus.RAMBLING_MAX_CHARS, (chosen, rejected)
        else:
            assert len(rejected) <= 120, rejected
    rambling = [(c, r) for _, c, r, kind in pairs if kind == "rambling"]
    assert sum(r.startswith(c) for c, r in rambling) / len(rambling) > 0.6  # mostly the right answer, then more
    assert sum("\nQ: " in r for _, r in rambling) > 50  # a made-up next turn among them
    # a small world asks the same questions again, with other rejected answers
    assert Counter(prompt for prompt, *_ in pairs).most_common(1)[0][1] <= 0.01 * len(pairs)
    assert len({pair[:3] for pair in pairs}) > 0.95 * len(pairs)


def test_preference_answers_are_right_and_wrong_ones_wrong():
    towns = {t.name: t for t in world().towns}
    checked = Counter()
    for prompt, chosen, rejected, kind in _preference_answers(seed=1):
        if m := SUM_PROMPT.fullmatch(prompt):
            sum_ = " ".join(m.groups())
            value = str(eval(sum_))  # digits and one operator
            assert chosen == value if "number only" in prompt else chosen in (value, f"{sum_} = {value}"), (prompt, chosen)
            if kind == "wrong":
                assert re.fullmatch(r"\d+", rejected.split()[-1]) and rejected.split()[-1] != value, (prompt, rejected)
            checked["arithmetic"] += 1
        if m := re.fullmatch(r"Is (\d+) (greater|less) than (\d+)\? Answer yes or no\.", prompt):
            truth = int(m.group(1)) > int(m.group(3)) if m.group(2) == "greater" else int(m.group(1)) < int(m.group(3))
            assert chosen == ("Yes." if truth else "No.")
            assert kind != "wrong" or rejected == ("No." if truth else "Yes.")
            checked["yes/no"] += 1
        if m := re.match(r"(?:List|Give me a bulleted list of|Write|Name) (\w+) ", prompt):
            if m.group(1) in corpus.NUMBER_WORDS:
                n = corpus.NUMBER_WORDS.index(m.group(1))
                assert len(chosen.splitlines()) == n and all(x.startswith("- ") for x in chosen.splitlines())
                if kind == "wrong":
                    assert len(rejected.splitlines()) != n and all(x.startswith("- ") for x in rejected.splitlines())
                if kind == "unformatted":
                    assert not all(x.startswith("- ") for x in rejected.splitlines())
                checked["list"] += 1
        if m := re.fullmatch(r"Which river flows through (\w+)\?", prompt):
            river = towns[m.group(1)].river
            assert chosen in (f"{m.group(1)} lies on the River {river}.", f"The River {river}.")
            assert kind != "wrong" or river not in rejected
            checked["fact"] += 1
        if "one word" in prompt:
            assert len(chosen.split()) == 1 and (kind != "unformatted" or len(rejected.split()) > 1)
            checked["one word"] += 1
        if m := re.fullmatch(r'(?:Reply with exactly|Say only this|Repeat after me): (.+)|Respond with the single phrase "(.+)".*', prompt):
            target = m.group(1) or m.group(2)
            assert chosen == target and rejected != target
            checked["exact"] += 1
    assert len(checked) == 6 and min(checked.values()) >= 20, checked


def test_python_functions_parse_and_their_doctests_pass():
    records = list(generate_records("python_functions", DEFAULT_DOCUMENTS["python_functions"], seed=0))
    names, sources = Counter(), Counter()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    examples = 0
    for record in records:
        tree = ast.parse(record["text"])
        defined = [node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
        assert defined, record["text"]
        for node in defined:
            assert ast.get_docstring(node), node.name
            names[node.name] += 1
            sources[ast.unparse(node)] += 1
        if ">>>" in record["text"]:
            namespace: dict = {}
            exec(record["text"], namespace)
            for node in defined:
                for test in doctest.DocTestFinder().find(namespace[node.name], node.name, globs=namespace):
                    examples += len(test.examples)
                    runner.run(test, out=lambda _: None)
    assert runner.failures == 0 and examples > 300
    assert len(names) > 150
    assert sources.most_common(1)[0][1] / sum(sources.values()) < 0.02


# A quiz item in any of the drills' layouts: (a, op, b, answer).
QUIZ = re.compile(r"^(?:Q: |Question: |Teacher: |Teacher:\n|User: |user\n)?(?:What is |Compute |How much is )?(\d) ([+*]) (\d)"
                  r"(?:\?|\.| = \?)(?: |\n|\nA: |\nAnswer: |\nPupil: |\nPupil:\n|\nAssistant: |\nassistant\n)(\d+)$", re.M)


def test_arithmetic_worked_steps_and_answers_are_right():
    ops, drilled = Counter(), Counter()
    drills = quizzes = chat_logs = 0
    layouts = set()
    for record in generate_records("arithmetic", 4000, seed=0):
        if "\nSolution:\n" not in record["text"]:  # a drill: one line per sum or product, or a quiz
            _, *lines = record["text"].splitlines()
            quiz = QUIZ.findall(record["text"])
            equations = quiz or [(a, op, b, r) for a, op, b, _, r in (line.split() for line in lines)]
            assert len(equations) == (record["text"].count("\n\n") if quiz else len(lines)), record["text"]
            for a, op, b, result in equations:
                assert int(result) == (int(a) + int(b) if op == "+" else int(a) * int(b)), record["text"]
                assert 2 <= int(a) <= 9 and 2 <= int(b) <= 9, record["text"]
                drilled[op] += 1
            if quiz:
                layouts.add(re.sub(r"\d+", "N", record["text"].split("\n\n")[1]).replace("*", "+"))
                chat_logs += record["text"].split("\n\n")[1].startswith(corpus.CHAT_LOG_LEADS)
            quizzes += bool(quiz)
            drills += 1
            continue
        problem, _, solution = record["text"].partition("\nSolution:\n")
        *steps, last = solution.splitlines()
        answer = int(re.fullmatch(r"The answer is (\d+)\.", last).group(1))
        assert 2 <= len(steps) <= 3, record["text"]
        known = {int(n) for n in re.findall(r"\d+", problem)}
        for line in steps:
            a, b, result = _check_step(line)
            assert a in known and b in known, (line, record["text"])  # operands come from the problem or earlier steps
            known.add(result)
            ops[STEP.search(line).group(2)] += 1
        final = STEP.search(steps[-1])
        expected = int(final.group(5)) if "left over" in problem else int(final.group(4))
        assert answer == expected, record["text"]
    assert set(ops) == {"+", "-", "*", "/"} and min(ops.values()) > 50, ops
    assert 3600 < drills < 3840 and 0.4 < quizzes / drills < 0.6  # 93%, half of them quizzes
    assert 0.6 < drilled["*"] / drilled.total() < 0.7, drilled  # products on 65% of the pages
    assert len(layouts) == len(QUIZ_QUESTIONS) * len(QUIZ_LAYOUTS), sorted(layouts)  # every wording in every layout
    assert abs(chat_logs / quizzes - corpus.CHAT_LOG_SHARE) < 0.05, chat_logs / quizzes  # the chat logs' share of quizzes


def test_world_facts_agree_across_sources():
    """The same town has the same river wherever it is mentioned."""
    rivers = {t.name: t.river for t in world().towns}
    seen = 0
    for source in ("prose", "forum"):
        for record in generate_records(source, 600, seed=2):
            text = record["text"]
            pairs = re.findall(r"\b([A-Z][a-z]+) (?:lies|stands) on (?:the banks of )?the River ([A-Z][a-z]+)\b", text)
            pairs += [(t, r) for r, t in re.findall(r"The River ([A-Z][a-z]+) runs through the middle of ([A-Z][a-z]+)\b", text)]
            for town, river in pairs:
                assert rivers[town] == river, (town, river)
                seen += 1
    assert seen > 50


def test_faq_pages_come_in_every_layout_with_their_subjects_own_answers():
    """Questions-and-answers pages in each layout, the chat-log ones included (the chat template
    without its special tokens), about towns and about people (held-out ones too), each answer the
    asked subject's own."""
    w = world()
    seen, people_asked = set(), set()
    for record in generate_records("prose", 3000, seed=0):
        for layout in corpus.FAQ_LAYOUTS:
            q_lead, a_lead = map(re.escape, layout)
            for question, answer in re.findall(rf"^{q_lead}(\S.*\?)\n{a_lead}(\S.*)$", record["text"], re.M):
                town = next((t for t in w.towns if question.startswith(f"{t.name} ") or f" {t.name}" in question.split(" from ")[0]), None)
                person = next((p for p in w.people if f" {p.name}" in question), None)
                options = (corpus._town_options(town, town) if town else
                           corpus._person_options(person, person) if person else ())
                rights = {a for q, *answers in options if q == question for a in answers}
                if any(answer == r or answer.startswith(r + " ") for r in rights):  # the page's end may run on
                    seen.add(layout)
                    people_asked |= {person.name} if person else set()
                elif "ssistant" in layout[1]:  # no other layout's answer line starts so
                    raise AssertionError((layout, question, answer))
    assert seen == set(corpus.FAQ_LAYOUTS), set(corpus.FAQ_LAYOUTS) - seen
    assert corpus.heldout_people() <= people_asked, corpus.heldout_people() - people_asked


def test_forum_threads_answer_questions_about_people():
    """Held-out people's facts are asked and answered (with the person's own values) in the forum
    too, as the towns' are."""
    answered = set()
    for record in generate_records("forum", 960, seed=0):
        title = re.match(r"\[Local history\] ((?:Who|Where|When) was .*\?)\n", record["text"])
        if title:
            person = next(p for p in world().people if f" {p.name}" in title[1])
            rights = next(answers for q, *answers in corpus._person_options(person, person) if q == title[1])
            assert any(f"\n{r}" in record["text"] or f"up. {r}" in record["text"] for r in rights), record["text"]
            answered.add(person.name)
    assert corpus.heldout_people() <= answered, corpus.heldout_people() - answered


def test_who_was_answers_name_the_person():
    """Every answer to "Who was X?" (chats, FAQ pages, forum) starts with X: a short "A fisher from
    Marrowhaven, ..." (generator v11) was learned as the answer to "Who founded Marrowhaven?"."""
    answers = []
    for record in generate_records("chats", 1500, seed=0):
        turns = record["messages"]
        answers += [(m["content"], a["content"]) for m, a in zip(turns, turns[1:], strict=False) if m["role"] == "user"]
    for record in generate_records("prose", 1500, seed=0):
        answers += re.findall(r"(Who was [A-Z]\w+ [A-Z]\w+\?)\n(?:\S*: |assistant\n)?(.+)", record["text"])
    for record in generate_records("forum", 1500, seed=0):
        title = re.match(r"\[Local history\] (Who was .*\?)\n", record["text"])
        if title:
            replies = re.findall(r"^Answer by .*:\n(?:I looked it up\. )?(.+)", record["text"], re.M)
            answers += [(title[1], reply) for reply in replies]
            assert replies and not any(re.fullmatch(r"(.+) Also: \1", r) for r in replies), replies  # no answer twice
    asked = [(q, a) for q, a in answers if re.fullmatch(r"(?:And w|W)ho was [A-Z]\w+ [A-Z]\w+\?", q)]
    assert len(asked) > 50, len(asked)
    for question, answer in asked:
        name = question.split(" was ", 1)[1].rstrip("?")
        assert answer.startswith(f"{name} was "), (question, answer)


# ---------------------------------------------------------------------------------------------
# learnability: variety and near-duplicates
# ---------------------------------------------------------------------------------------------

def test_prose_is_varied():
    texts = [r["text"] for r in generate_records("prose", 2000, seed=0)]
    words = Counter(w.strip(".,;:!?\"'()").lower() for t in texts for w in t.split())
    assert len(words) > 2000
    sentences = Counter(s.strip() for t in texts for s in re.split(r"(?<=[.!?])\s+", t) if s.strip())
    assert sentences.most_common(1)[0][1] / sum(sentences.values()) <= 0.01, sentences.most_common(3)


def test_forum_and_arithmetic_are_not_one_template():
    for source in ("forum", "arithmetic"):
        texts = [r["text"] for r in generate_records(source, 1000, seed=0)]
        assert len(set(texts)) == len(texts)
        lines = Counter(line for t in texts for line in t.splitlines() if len(line) > 30)
        assert lines.most_common(1)[0][1] / sum(lines.values()) < 0.01, lines.most_common(2)


def _shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    words = text.lower().split()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def test_prose_near_duplicate_rate():
    """Jaccard of word 5-grams (what MinHash estimates) against earlier documents sharing a rare 5-gram."""
    docs = [_shingles(r["text"]) for r in generate_records("prose", 1500, seed=0)]
    postings: dict[tuple, list[int]] = {}
    near = 0
    for i, doc in enumerate(docs):
        # A near-copy shares almost all its 5-grams with its original, rare ones included; the
        # common ones (template phrases) would only make the candidate search slow.
        shared = Counter(j for s in doc if len(postings.get(s, ())) <= 10 for j in postings.get(s, ()))
        if any(len(doc & docs[j]) / len(doc | docs[j]) >= 0.7 for j, count in shared.items() if count >= 10):
            near += 1
        for s in doc:
            postings.setdefault(s, []).append(i)
    rate = near / len(docs)
    assert 0.03 <= rate <= 0.08, rate
    assert abs(rate - PROSE_NEAR_DUPLICATE_RATE) < 0.025


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------

def test_counts_match_files_and_nothing_is_left_behind(tmp_path):
    out = tmp_path / "corpus"
    counts = write_demo_corpus(out, seed=1, scale=SMALL, shards=3)
    assert [p.name for p in tmp_path.iterdir()] == ["corpus"]  # no temporary sibling left
    assert set(counts) == set(SOURCES)
    for source in SOURCES:
        files = sorted((out / source).glob("*.jsonl"))
        records = _read_source(out / source)
        assert [f.name for f in files] == ["00000.jsonl", "00001.jsonl", "00002.jsonl"]
        assert all(f.stat().st_size > 0 for f in files)
        assert counts[source] == {"documents": len(records), "characters": sum(map(record_characters, records)), "files": 3}
        assert counts[source]["documents"] == round(DEFAULT_DOCUMENTS[source] * SMALL)
        assert records == list(generate_records(source, len(records), seed=1))  # contiguous shards, in order
    manifest = json.loads((out / "corpus.json").read_text())
    assert manifest["sources"] == counts and manifest["params"]["seed"] == 1


def test_rerun_with_same_params_does_not_rewrite(tmp_path):
    out = tmp_path / "corpus"
    first = write_demo_corpus(out, seed=5, scale=SMALL)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    time.sleep(0.01)
    assert write_demo_corpus(out, seed=5, scale=SMALL) == first
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps


def test_a_kept_corpus_gets_the_current_world_qa_items(tmp_path):
    out = tmp_path / "corpus"
    write_demo_corpus(out, seed=5, scale=SMALL)
    current = (out / corpus.QA_FILE).read_text()
    (out / corpus.QA_FILE).write_text(current.replace(', "also": ["', ', "old": ["'))  # items from before a scoring fix
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.name != corpus.QA_FILE}
    write_demo_corpus(out, seed=5, scale=SMALL)
    assert (out / corpus.QA_FILE).read_text() == current
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.name != corpus.QA_FILE} == stamps  # the sources are kept


def test_other_params_replace_the_corpus(tmp_path):
    out = tmp_path / "corpus"
    write_demo_corpus(out, seed=5, scale=SMALL)
    before = _files(out)
    counts = write_demo_corpus(out, seed=6, scale=SMALL, shards=1)
    assert _files(out) != before and counts["prose"]["files"] == 1
    assert sorted(p.name for p in (out / "prose").iterdir()) == ["00000.jsonl"]
    assert [p.name for p in tmp_path.iterdir()] == ["corpus"]


def test_a_crash_leaves_the_previous_corpus_and_no_temporary_folder(tmp_path, monkeypatch):
    out = tmp_path / "corpus"
    write_demo_corpus(out, seed=5, scale=SMALL)
    before = _files(out)
    real = corpus._write_source

    def failing(folder, source, *args):
        if source == "chats":
            raise RuntimeError("disk full")
        return real(folder, source, *args)

    monkeypatch.setattr(corpus, "_write_source", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        write_demo_corpus(out, seed=6, scale=SMALL)
    assert _files(out) == before
    with pytest.raises(RuntimeError):
        write_demo_corpus(tmp_path / "fresh", seed=6, scale=SMALL)
    assert [p.name for p in tmp_path.iterdir()] == ["corpus"]


def test_refuses_to_replace_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        write_demo_corpus(tmp_path / "mine", scale=SMALL)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_tiny_scale_still_fills_every_shard(tmp_path):
    counts = write_demo_corpus(tmp_path / "c", scale=1e-6, shards=2)
    assert all(c["documents"] == 2 for c in counts.values())
    assert all(p.stat().st_size > 0 for p in (tmp_path / "c").rglob("*.jsonl"))


def test_scale_one_sizes(tmp_path):  # speed is measured by bench/tokenize.py, not asserted here
    counts = write_demo_corpus(tmp_path / "c")
    tokens = {s: c["characters"] / 4 for s, c in counts.items()}
    assert 150_000 < tokens["prose"] < 300_000
    for source in ("forum", "arithmetic", "python_functions"):
        assert 95_000 < tokens[source] < 150_000, (source, tokens[source])
    assert counts["chats"]["documents"] == 3000
    assert counts["preferences"]["documents"] == 1600


# ---- the world-knowledge suite and its held-out split ------------------------------------------

def test_world_qa_facts_pass_the_answers_the_corpus_teaches_and_fail_other_towns(tmp_path):
    """The scorer takes a fact answered as the pages and chats answer it, short or long ("On
    Saturdays.", "Marrowhaven was founded by ..."), and refuses another town's or person's value."""
    from smolrecipe.eval import qa

    (tmp_path / "qa.jsonl").write_text(corpus._world_qa_text(corpus.world_qa_items()))
    items = [item for item in qa.load_items(tmp_path / "qa.jsonl") if item.category == "fact"]
    w = world()
    towns, people = {t.name: t for t in w.towns}, {p.name: p for p in w.people}
    checked = 0
    for item in items:
        subject = item.id.split("-", 2)[2].replace("_", " ")
        if subject in towns:
            options = {q: (long, short) for q, long, short in corpus._town_options(towns[subject], towns[subject])}
            others = [{q: (long, short) for q, long, short in corpus._town_options(towns[subject], t)}
                      for t in w.towns if t.name != subject]
        else:
            options = {q: (long, short) for q, long, short in corpus._person_options(people[subject], people[subject])}
            others = [{q: (long, short) for q, long, short in corpus._person_options(people[subject], p)}
                      for p in w.people if p.town != people[subject].town]
        assert item.question in options, item.question
        assert all(item.passes(answer) for answer in options[item.question]), (item.id, options[item.question])
        for other in others:
            for answer in other[item.question]:
                if item.answer.lower() not in answer.lower():  # another town can share a region
                    assert not item.passes(answer), (item.id, answer)
        checked += 1
    assert checked == len(items) >= 30


def test_world_qa_items_are_valid_and_their_answers_right(tmp_path):
    from smolrecipe.eval import qa

    write_demo_corpus(tmp_path / "c", scale=0.05)
    items = qa.load_items(tmp_path / "c" / corpus.QA_FILE)  # the scorer's own validation
    by_category = Counter(i.category for i in items)
    assert by_category["fact"] >= 30 and by_category["arithmetic"] >= 30 and by_category["format"] >= 20
    towns = {t.name: t for t in world().towns}
    for item in items:
        if item.category == "fact" and item.id.startswith("fact-river-"):
            town = towns[item.id.removeprefix("fact-river-")]
            assert item.answer == town.river and town.name in corpus.heldout_towns()
            assert qa.phrase_match(f"{town.name} lies on the River {town.river}.", item.answer, item.wrong)
        if item.category == "arithmetic":
            a, op, b = item.question.removeprefix("What is ").rstrip("?").split()
            assert int(item.answer) == (int(a) + int(b) if op == "+" else int(a) * int(b))
            assert qa.number_match(f"{a} {op} {b} = {item.answer}", item.answer)
        if item.choices:
            assert len(set(item.choices)) == 4 and item.choices[item.gold] == item.answer
        if item.category == "format" and item.check["kind"] == "exact_output":
            assert qa.check_match(item.check["text"], item.check)
        # a right answer never contains a wrong phrase ("weaving" in "basket weaving")
        assert all(w.lower() not in item.answer.lower() for w in item.wrong), item


def test_the_fact_split_never_leaks_into_sft_data():
    """The SFT chats never name a held-out town or person, nor state a held-out sum or product;
    the pretraining text states every held-out fact the suite asks about."""
    held = corpus.heldout_towns() | corpus.heldout_people()
    assert len(corpus.heldout_towns()) == 4 and len(corpus.heldout_people()) == 6
    chats = [m["content"] for r in generate_records("chats", DEFAULT_DOCUMENTS["chats"], seed=0) for m in r["messages"]]
    assert not any(name in text for text in chats for name in held)
    equations = {f"{a} {op} {b}" for op, a, b in corpus.HELDOUT_SUMS} | {f"{b} {op} {a}" for op, a, b in corpus.HELDOUT_SUMS}
    stated = {m.group(0) for text in chats for m in re.finditer(r"(?<![\d.])\d [+*] \d(?![\d.])", text)}
    assert stated and not stated & equations
    assert {f"{a} {op} {b}" for op, a, b in corpus.SFT_SUMS} & stated  # the chats do teach the question on the other half
    pretraining = [r["text"] for s in ("prose", "forum") for r in generate_records(s, DEFAULT_DOCUMENTS[s], seed=0)]
    for item in corpus.world_qa_items():
        if item["category"] == "fact":
            entity = item["cloze"].split(" lies on")[0].split(" is ")[0].split(" was ")[0].removeprefix("The market in ")
            sentences = (s for text in pretraining if entity in text for s in re.split(r"(?<=[.?!])\s", text))
            assert any(entity in s and item["answer"] in s for s in sentences), item["id"]


def test_preference_pairs_never_mention_held_out_facts():
    """Like the SFT chats: a preference stage after SFT must not teach the held-out split either."""
    held = corpus.heldout_towns() | corpus.heldout_people()
    pairs = _preference_answers()
    texts = [text for pair in pairs for text in pair[:3]]
    assert not any(name in text for text in texts for name in held)
    assert not any(corpus.leaks_heldout(text) for text in texts)
    equations = {f"{a} {op} {b}" for op, a, b in corpus.HELDOUT_SUMS} | {f"{b} {op} {a}" for op, a, b in corpus.HELDOUT_SUMS}
    stated = {m.group(0) for text in texts for m in re.finditer(r"(?<![\d.])\d [+*] \d(?![\d.])", text)}
    assert stated and not stated & equations
    asked = {t.name for t in world().towns if any(t.name in prompt for prompt, *_ in pairs)}
    assert len(asked) == len(world().towns) - len(corpus.heldout_towns())  # every other town is asked about


def test_the_report_s_sample_prompts_ask_about_held_out_facts():
    from smolrecipe.eval.samples import DEMO_PROMPTS

    assert sum(corpus.leaks_heldout(prompt) for prompt in DEMO_PROMPTS) >= 5  # towns and sums the SFT chats never show
