"""Closed-book QA about the demo world (`qa:<name>` tasks): the item file, and how an answer is scored.

The items are a JSONL file (the demo corpus tool writes runs/data/corpus/world_qa.jsonl), one a line:

    {"id": "fact-0007", "category": "fact", "question": "Which river flows through Ashford?",
     "answer": "Lune", "match": "phrase", "wrong": ["Wend", "Tarrow", "Ambrel"],
     "cloze": "Ashford lies on the River", "choices": ["Lune", "Wend", "Tarrow", "Ambrel"], "gold": 0}

  id, category, question, match   always; category is fact, arithmetic or format
  answer                           match phrase: the phrase to find; match number: the number, as a string
  also                             match phrase, optional: other phrases that pass as the answer (the
                                   same thing said otherwise: "Saturdays" for "Saturday" in "On Saturdays.")
  wrong                            match phrase, optional: phrases that must not appear either
  check                            match check (format items): {"kind": <a check of smolrecipe.eval.checks>, **params}
  cloze, choices, gold             optional, all three or none (not on format items): the gold choice
                                   should be the likeliest continuation of the cloze (a space goes between)

Each item is scored twice (smolrecipe.eval.tasks runs both through lighteval):
- generation, the question answered greedily: `phrase` passes when the normalised answer phrase
  (or one of `also`) occurs in the normalised text as whole words and no `wrong` phrase does
  (normalised: lowercase, punctuation as spaces, whitespace collapsed); `number` when the text's
  final number equals the answer; `check` when the check passes;
- likelihood (items with choices): whether the gold choice is the likeliest continuation.

Nothing here imports lighteval or torch.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smolrecipe.errors import UserError
from smolrecipe.eval import checks as sft_checks

CATEGORIES = ("fact", "arithmetic", "format")
MATCHES = ("phrase", "number", "check")
FIELDS = ("id", "category", "question", "answer", "match", "also", "wrong", "check", "cloze", "choices", "gold")
REQUIRED = ("id", "category", "question", "match")
CLOZE_FIELDS = ("cloze", "choices", "gold")
# Checks an item can name: not clean_end (it reads the generation's end, not the text), and none
# that an empty answer passes.
ITEM_CHECKS = tuple(kind for kind in sft_checks.CHECKS if kind != "clean_end" and kind not in sft_checks.PASSES_EMPTY)


# --- scoring -------------------------------------------------------------------------------------


NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def final_number(text: str) -> str | None:
    """The last number in `text`, without thousands separators or a trailing '.0'; GSM8K golds follow '####'."""
    text = text.split("####")[-1] if "####" in text else text
    numbers = NUMBER.findall(text)
    if not numbers:
        return None
    value = numbers[-1].replace(",", "")
    return value[:-2] if value.endswith(".0") else value


def normalise(text: str) -> str:
    """Lowercase, every punctuation character a space, whitespace collapsed to single spaces."""
    spaced = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text.casefold())
    return " ".join(spaced.split())


def has_phrase(text: str, phrase: str) -> bool:
    """Whether the normalised `phrase` occurs in the normalised `text` as whole words."""
    return f" {normalise(phrase)} " in f" {normalise(text)} "


def phrase_match(text: str, answer: str, wrong: tuple[str, ...] = (), also: tuple[str, ...] = ()) -> bool:
    return any(has_phrase(text, a) for a in (answer, *also)) and not any(has_phrase(text, w) for w in wrong)


def number_match(text: str, answer: str) -> bool:
    predicted = final_number(text)
    return predicted is not None and float(predicted) == float(final_number(answer))


def check_match(text: str, check: dict[str, Any]) -> bool:
    return bool(sft_checks.CHECKS[check["kind"]](text, **{k: v for k, v in check.items() if k != "kind"}))


# --- the item file -------------------------------------------------------------------------------


@dataclass(frozen=True)
class QAItem:
    id: str
    category: str
    question: str
    match: str
    answer: str | None = None
    also: tuple[str, ...] = ()
    wrong: tuple[str, ...] = ()
    check: dict[str, Any] | None = None
    cloze: str | None = None
    choices: tuple[str, ...] = ()
    gold: int | None = None

    def passes(self, text: str) -> bool:
        """Whether a generated answer is right (the generation score)."""
        if self.match == "phrase":
            return phrase_match(text, self.answer, self.wrong, self.also)
        if self.match == "number":
            return number_match(text, self.answer)
        return check_match(text, self.check)

    @property
    def expected(self) -> str | dict[str, Any]:
        """What an answer must have, as the answers file shows it: the phrase, the number, or the check."""
        return self.answer if self.answer is not None else self.check


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _item(raw: Any, fail) -> QAItem:
    if not isinstance(raw, dict):
        fail("line", f"is a JSON {type(raw).__name__}", "write one JSON object per line")
    if unknown := [k for k in raw if k not in FIELDS]:
        fail(unknown[0], "is not a field of a QA item", f"use only {', '.join(FIELDS)}")
    for name in REQUIRED:
        if name not in raw:
            fail(name, "is missing", f"every item has {', '.join(REQUIRED)}")
    for name in ("id", "question"):
        if not _text(raw[name]):
            fail(name, f"is {raw[name]!r}", "make it a non-empty string")
    category, match = raw["category"], raw["match"]
    if category not in CATEGORIES:
        fail("category", f"is {category!r}", f"use one of {', '.join(CATEGORIES)}")
    if match not in MATCHES:
        fail("match", f"is {match!r}", f"use one of {', '.join(MATCHES)}")
    if (category == "format") != (match == "check"):
        fail("match", f"is {match!r} for a {category} item",
             "format items are scored by a check (match: check); fact and arithmetic items by phrase or number")
    if match == "check":
        for name in ("answer", "also", "wrong"):
            if name in raw:
                fail(name, "is given for a check item", 'a format item has only "check" to pass')
        check = raw.get("check")
        if not isinstance(check, dict) or "kind" not in check:
            fail("check", f"is {check!r}", 'write {"kind": "<check>", ...params}, e.g. {"kind": "bullet_count", "n": 3}')
        if "type" in check:
            fail("check.type", "is not a parameter of a check", 'name the check with "kind" (the SFT suite\'s "type")')
        if check["kind"] not in ITEM_CHECKS:
            fail("check.kind", f"is {check['kind']!r}", f"use one of {', '.join(ITEM_CHECKS)}")
        try:
            sft_checks.validate_check({"type": check["kind"], **{k: v for k, v in check.items() if k != "kind"}}, "check")
        except UserError as err:
            fail("check", err.problem, err.fix)
    else:
        if "check" in raw:
            fail("check", f"is given for a {match} item", f"a {match} item has an answer, not a check")
        if not _text(raw.get("answer")):
            fail("answer", f"is {raw.get('answer')!r}", f"give the {'number as a string' if match == 'number' else 'phrase'}")
        if match == "number" and not NUMBER.fullmatch(raw["answer"].strip()):
            fail("answer", f"{raw['answer']!r} is not a number", 'write the number alone, as a string: "42", "-3.5"')
        for name, what in (("wrong", "wrong phrases"), ("also", "other phrases that pass")):
            phrases = raw.get(name, [])
            if name in raw and match != "phrase":
                fail(name, f"is given for a {match} item", f"only phrase items list {what}")
            if not isinstance(phrases, list) or not all(_text(p) and normalise(p) for p in phrases):
                fail(name, f"is {phrases!r}", "make it a list of non-empty phrases")
        wrong, also = raw.get("wrong", []), raw.get("also", [])
        if match == "phrase":
            if not normalise(raw["answer"]):
                fail("answer", f"{raw['answer']!r} is only punctuation", "give the phrase to find")
            for right in (raw["answer"], *also):
                if clash := [w for w in wrong if has_phrase(w, right) or has_phrase(right, w)]:
                    fail("wrong", f"{clash[0]!r} contains the answer {right!r} or is part of it",
                         "list only phrases that a right answer does not contain")
    given = [name for name in CLOZE_FIELDS if name in raw]
    if given and category == "format":
        fail(given[0], "is given for a format item", "likelihood scoring (cloze, choices, gold) is for fact and arithmetic items")
    if given and len(given) < len(CLOZE_FIELDS):
        fail(next(n for n in CLOZE_FIELDS if n not in raw), "is missing", "give cloze, choices and gold together, or none of them")
    if given:
        choices, gold = raw["choices"], raw["gold"]
        if not _text(raw["cloze"]):
            fail("cloze", f"is {raw['cloze']!r}", "make it the non-empty text the choices continue")
        if not isinstance(choices, list) or len(choices) < 2 or not all(_text(c) for c in choices):
            fail("choices", f"is {choices!r}", "give at least two non-empty continuations")
        if len(set(choices)) < len(choices):
            fail("choices", "repeats a continuation", "make every choice different")
        if not isinstance(gold, int) or isinstance(gold, bool) or not 0 <= gold < len(choices):
            fail("gold", f"is {gold!r}", f"give the index of the right choice, 0 to {len(choices) - 1}")
    return QAItem(id=raw["id"], category=category, question=raw["question"], match=match, answer=raw.get("answer"),
                  also=tuple(raw.get("also", ())), wrong=tuple(raw.get("wrong", ())), check=raw.get("check"),
                  cloze=raw.get("cloze"), choices=tuple(raw.get("choices", ())), gold=raw.get("gold"))


def load_items(path: Path) -> list[QAItem]:
    """The item file, validated: the first problem raises a UserError naming the file, the line and the field."""
    path = Path(path)
    if not path.is_file():
        raise UserError(str(path), "no such QA item file" if not path.exists() else "is not a file",
                        "generate it (python tools/make_demo_corpus.py writes world_qa.jsonl into the corpus folder) "
                        "or point qa.<name>.source in eval/suites.yaml at a JSONL file of items")
    items: list[QAItem] = []
    seen: dict[str, int] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(str(path), "is not UTF-8 text", "write the items as UTF-8 JSONL") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue

        def fail(field: str, problem: str, fix: str, number=number) -> None:
            raise UserError(f"{path} line {number}, {field}", problem, fix)

        try:
            raw = json.loads(line)
        except json.JSONDecodeError as error:
            fail("line", f"is not JSON ({error.msg})", "write one JSON object per line")
        item = _item(raw, fail)
        if item.id in seen:
            fail("id", f"{item.id!r} is also the id on line {seen[item.id]}", "give every item its own id")
        seen[item.id] = number
        items.append(item)
    if not items:
        raise UserError(str(path), "holds no items", "write one JSON object per line")
    return items


def select(items: list[QAItem], limit: int | None) -> list[QAItem]:
    """The items a run with this limit scores: all of them without one; otherwise `limit` items in
    all, taken in turn from each category (fact, arithmetic, format) in file order, so that every
    category is kept and none outweighs the others (a category with fewer items leaves its turns to
    the rest). Deterministic: the same file and limit give the same items."""
    if limit is None or limit >= len(items):
        return list(items)
    queues = [[item for item in items if item.category == category] for category in CATEGORIES]
    chosen: list[QAItem] = []
    while len(chosen) < limit:
        for queue in queues:
            if queue and len(chosen) < limit:
                chosen.append(queue.pop(0))
    order = {item.id: i for i, item in enumerate(items)}
    return sorted(chosen, key=lambda item: order[item.id])  # file order
