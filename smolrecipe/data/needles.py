"""Needle in a haystack (RULER's niah_single): a fact hidden at a chosen depth in filler text, asked for at the end.

A needle is a key (an adjective-noun pair) and a value (a number of `digits` digits), stated once
among filler sentences and asked for after them:

    <filler> The special magic number for golden kettle is 4821. <filler>
    What is the special magic number for golden kettle?
    The special magic number for golden kettle is

A base model completes the last line with the value (greedy, exact match: smolrecipe.eval.needle).
The filler is sentences of plain texts (a held-out folder), drawn in a seeded order, distinct within
one haystack; the key and the value never occur in it, so the needle is the only place the answer is.

Eval items are token ids of exactly the requested length: every piece (each sentence with the " "
before it, the needle, the question) is tokenized on its own and the ids are concatenated, and the
last filler sentence is cut to what is left. No decode and re-encode, so the length is exact by
construction. Depth is the share of filler tokens before the needle: 0 puts it first, 1 right before
the question; it goes to the sentence boundary closest to the requested depth.

Training documents (for a context-extension stage) are the same haystacks as text, with the answer
after the prefix (" 4821."); datatrove tokenizes them later, so their token count is the target's
to within a few tokens (pieces re-tokenize slightly differently where they join).

  split_sentences    text -> its sentences, whitespace collapsed
  SentencePool       plain texts -> distinct sentences, each tokenized once
  draw_needle        a seeded random.Random -> a Needle
  haystack_prompt    filler sentences + a needle -> one NeedleItem of exactly `length` tokens
  needle_grid        eval items for every (length, depth) cell, reproducible from a seed
  needle_documents   training documents (text, answer included), reproducible from a seed

Nothing here imports torch: a transformers tokenizer is all it needs.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from smolrecipe.errors import UserError

NEEDLE = "The special magic number for {key} is {value}."
QUESTION = "What is the special magic number for {key}?"
ANSWER_PREFIX = "The special magic number for {key} is"
ANSWER = " {value}."  # after the prefix, in training documents: what the model should generate
SENTENCE_SEP = " "  # between filler sentences, and around the needle
QUESTION_SEP = "\n"  # between the haystack and the question
PREFIX_SEP = "\n"  # between the question and the answer prefix

# Keys: words whole in a small BPE trained on English prose (the tiny recipe's 4,096 entries) and in
# any larger one, so that a key costs a few tokens and a small model can copy it.
ADJECTIVES = ("red", "blue", "green", "black", "white", "brown", "golden", "silver", "quiet", "loud", "sleepy", "brave",
              "gentle", "clever", "proud", "tall", "small", "little", "bright", "warm", "cold", "kind", "busy", "calm", "eager")
NOUNS = ("apple", "river", "garden", "bridge", "letter", "candle", "lantern", "meadow", "valley", "basket", "hammer", "kettle",
         "barrel", "tower", "orchard", "boat", "window", "forest", "island", "ribbon", "lamp", "horse", "fox", "owl", "badger")

# Longer sentences are left out of the pool: the needle is placed to within one sentence of its depth.
MAX_SENTENCE_TOKENS = 64
MAX_DIGITS = 18
MIN_FILLER_TOKENS = 8  # the least haystack a length must leave beside the needle and the question
NEEDLE_TRIES = 1000
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"')\]])\s+|\n+")


@dataclass(frozen=True)
class Needle:
    key: str
    value: str

    @property
    def sentence(self) -> str:
        return NEEDLE.format(key=self.key, value=self.value)

    @property
    def question(self) -> str:
        return QUESTION.format(key=self.key)

    @property
    def answer_prefix(self) -> str:
        return ANSWER_PREFIX.format(key=self.key)

    @property
    def answer(self) -> str:
        return ANSWER.format(value=self.value)

    @property
    def tail(self) -> str:
        """What follows the haystack in a prompt: the question and the answer prefix."""
        return QUESTION_SEP + self.question + PREFIX_SEP + self.answer_prefix

    def occurs_in(self, text: str) -> bool:
        return self.key in text.lower() or self.value in text


@dataclass(frozen=True)
class NeedleItem:
    """One eval prompt: `input_ids` is exactly `length` tokens, the needle starting at token `needle_start`."""

    input_ids: list[int]
    length: int
    depth: float  # requested
    depth_actual: float  # needle_start / filler_tokens
    needle_start: int
    filler_tokens: int  # the haystack's tokens less the needle's
    key: str
    value: str
    prompt: str  # the pieces' text, joined as the ids were (for display; re-tokenizing it may differ slightly)


def split_sentences(text: str) -> list[str]:
    """Sentences of `text` (split after . ! ? and at line breaks), inner whitespace collapsed."""
    parts = (" ".join(part.split()) for part in _SENTENCE_END.split(text))
    return [part for part in parts if part]


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


class SentencePool:
    """The distinct sentences of `texts` (first occurrence order), each tokenized once with the
    separator before it, as it appears inside a haystack. Sentences over MAX_SENTENCE_TOKENS are left out."""

    def __init__(self, tokenizer, texts: Iterable[str]):
        self.tokenizer = tokenizer
        candidates = list(dict.fromkeys(s for text in texts for s in split_sentences(text)))
        spaced = tokenizer([SENTENCE_SEP + s for s in candidates], add_special_tokens=False)["input_ids"] if candidates else []
        kept = [(s, ids) for s, ids in zip(candidates, spaced, strict=True) if 0 < len(ids) <= MAX_SENTENCE_TOKENS]
        self.sentences = [s for s, _ in kept]
        self.ids = [ids for _, ids in kept]
        self.tokens = sum(len(ids) for ids in self.ids)

    def __len__(self) -> int:
        return len(self.sentences)

    def draw(self, rng: random.Random, tokens: int) -> list[int]:
        """Indices of distinct sentences in a seeded random order, until they hold `tokens` tokens
        (all of them when the pool holds fewer)."""
        if self.tokens <= tokens:
            order = list(range(len(self)))
            rng.shuffle(order)
            return order
        # Rejection keeps a draw proportional to what it takes, not to the pool (which may be large).
        chosen: list[int] = []
        seen: set[int] = set()
        total = 0
        while total < tokens:
            i = rng.randrange(len(self))
            if i not in seen:
                seen.add(i)
                chosen.append(i)
                total += len(self.ids[i])
        return chosen


def draw_needle(rng: random.Random, digits: int = 4) -> Needle:
    """A key from ADJECTIVES x NOUNS and a value of `digits` digits without a leading zero."""
    key = f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
    return Needle(key, str(rng.randint(10 ** (digits - 1), 10**digits - 1)))


# --- one haystack ---------------------------------------------------------------------------------


@dataclass
class _Piece:
    text: str  # without the separator before it
    spaced: list[int]  # the ids with the separator before it (inside the haystack)

    def ids(self, tokenizer, first: bool) -> list[int]:
        return _ids(tokenizer, self.text) if first else self.spaced


def _closest_boundary(boundaries: list[int], target: float) -> int:
    """The index of the boundary closest to `target` (the earlier one on a tie: monotone in the target)."""
    return min(range(len(boundaries)), key=lambda j: (abs(boundaries[j] - target), j))


def _layout(tokenizer, filler: list[_Piece], needle: _Piece, depth: float, budget: int) -> tuple[list[_Piece], list[list[int]], int]:
    """(pieces in order, their ids, the needle's index) with exactly `budget` tokens in all: the needle
    at the sentence boundary closest to `depth`, the last filler sentence cut to fit."""
    room = budget - len(needle.spaced)  # filler tokens, to a token or two (the first piece has no separator)
    cumulative = [0]
    for piece in filler:
        if cumulative[-1] >= room:
            break
        cumulative.append(cumulative[-1] + len(piece.spaced))
    used = len(cumulative) - 1  # the filler sentences it takes; the last one is cut
    # boundaries before each used sentence, and after the (cut) last one
    j = _closest_boundary([*cumulative[:used], room], depth * room)
    for _ in range(4 * len(filler) + 4):
        order = [*filler[:j], needle, *filler[j:used]]
        ids = [p.ids(tokenizer, first=k == 0) for k, p in enumerate(order)]
        last = used - 1 if j == used else used  # the last filler sentence's place in `order`
        rest = budget - sum(len(x) for k, x in enumerate(ids) if k != last)
        if rest <= 0:  # the pieces before it fill the budget already
            used -= 1
            j = min(j, used)
        elif rest > len(ids[last]):  # separators shifted a token: one more sentence
            used += 1
        else:
            ids[last] = ids[last][:rest]
            return order, ids, next(k for k, p in enumerate(order) if p is needle)
        if used < 1 or used > len(filler):
            break
    raise UserError("sentences", f"{len(filler)} filler sentences cannot fill {budget} tokens around the needle",
                    "give more sentences")  # needle_grid and needle_documents draw with a margin: never there


def _item(tokenizer, filler: list[_Piece], needle: Needle, length: int, depth: float, budget: int | None = None) -> NeedleItem:
    """The prompt for `needle` in `filler` (enough sentences, drawn with a margin): `budget` tokens
    of haystack + needle + question + answer prefix (default `length`)."""
    tail = _ids(tokenizer, needle.tail)
    needle_piece = _Piece(needle.sentence, _ids(tokenizer, SENTENCE_SEP + needle.sentence))
    order, ids, at = _layout(tokenizer, filler, needle_piece, depth, (budget or length) - len(tail))
    texts = [p.text if k == 0 else SENTENCE_SEP + p.text for k, p in enumerate(order)]
    for k, (piece, piece_ids) in enumerate(zip(order, ids, strict=True)):
        if piece is not needle_piece and len(piece_ids) < len(piece.ids(tokenizer, first=k == 0)):
            texts[k] = tokenizer.decode(piece_ids)  # the cut sentence, as far as its ids go
    start = sum(len(x) for x in ids[:at])
    filler_tokens = sum(len(x) for k, x in enumerate(ids) if k != at)
    return NeedleItem(
        input_ids=[i for x in ids for i in x] + tail, length=length, depth=depth, depth_actual=start / filler_tokens,
        needle_start=start, filler_tokens=filler_tokens, key=needle.key, value=needle.value, prompt="".join(texts) + needle.tail,
    )


def haystack_prompt(tokenizer, sentences: Sequence[str], length: int, depth: float, needle: Needle) -> NeedleItem:
    """`needle` hidden at `depth` among `sentences` (taken in order, as many as `length` needs), then
    the question and the answer prefix: exactly `length` tokens. The sentences must hold enough tokens
    and must not contain the needle's key or value (needle_grid draws both so that they do not)."""
    _check_depths([depth], "depth")
    filler = [_Piece(s, _ids(tokenizer, SENTENCE_SEP + s)) for s in sentences]
    if any(needle.occurs_in(p.text) for p in filler):
        raise UserError("sentences", f"the filler contains the needle's key '{needle.key}' or value {needle.value}",
                        "draw another needle (draw_needle), or leave that sentence out")
    _check_room(tokenizer, [length], needle, sum(len(p.spaced) for p in filler), "length", "sentences", margin=0)
    return _item(tokenizer, filler, needle, length, depth)


# --- checks ---------------------------------------------------------------------------------------


def _check_depths(depths: Iterable[float], field: str) -> None:
    for depth in depths:
        if not 0.0 <= depth <= 1.0:
            raise UserError(field, f"depth {depth} is outside [0, 1]", "give depths from 0 (the haystack's start) to 1 (its end)")


def _check_digits(digits: int, field: str) -> None:
    if not 1 <= digits <= MAX_DIGITS:
        raise UserError(field, f"is {digits}", f"give a value length from 1 to {MAX_DIGITS} digits")


def _check_room(tokenizer, lengths: Iterable[int], needle: Needle, filler_tokens: int, length_field: str, texts_field: str,
                margin: int = 2 * MAX_SENTENCE_TOKENS, extra: int = 0) -> None:
    """Each length holds the needle, the question and MIN_FILLER_TOKENS of filler, and the texts fill
    the longest (with `margin` tokens to spare, so that a draw never runs short)."""
    lengths = list(lengths)
    fixed = len(_ids(tokenizer, SENTENCE_SEP + needle.sentence)) + len(_ids(tokenizer, needle.tail)) + extra
    for length in lengths:
        if length < fixed + MIN_FILLER_TOKENS:
            raise UserError(length_field, f"{length} tokens cannot hold the needle, the question and the answer prefix "
                            f"({fixed} tokens with this tokenizer) and {MIN_FILLER_TOKENS} of filler",
                            f"give lengths of at least {fixed + MIN_FILLER_TOKENS}")
    need = max(lengths) - fixed + margin
    if filler_tokens < need:
        raise UserError(texts_field, f"holds {filler_tokens:,} tokens of usable sentences (each up to {MAX_SENTENCE_TOKENS} "
                        f"tokens), too few to fill {max(lengths):,}-token haystacks ({need:,} needed)",
                        "give more (or longer) plain texts, or shorter lengths")


# --- seeded sets ----------------------------------------------------------------------------------


def _haystack(pool: SentencePool, rng: random.Random, tokens: int, digits: int, where: str) -> tuple[list[_Piece], Needle]:
    """Filler sentences holding `tokens` tokens and more (a margin of two long sentences), and a
    needle whose key and value none of them contains."""
    filler = [_Piece(pool.sentences[i], pool.ids[i]) for i in pool.draw(rng, tokens + 2 * MAX_SENTENCE_TOKENS)]
    text = " ".join(p.text for p in filler)
    for _ in range(NEEDLE_TRIES):
        needle = draw_needle(rng, digits)
        if not needle.occurs_in(text):
            return filler, needle
    raise UserError(f"{where}.haystack", f"every drawn needle's key or value occurs in the filler ({NEEDLE_TRIES} tries)",
                    "give texts with fewer numbers, or more digits")


def _longest(tokenizer, words: Sequence[str]) -> str:
    return max(words, key=lambda w: len(_ids(tokenizer, SENTENCE_SEP + w)))


def _pool(tokenizer, texts: Iterable[str], lengths: list[int], digits: int, where: str, extra: int = 0) -> SentencePool:
    if not lengths:
        raise UserError(f"{where}.lengths", "is empty", "give at least one length in tokens")
    _check_digits(digits, f"{where}.digits")
    pool = SentencePool(tokenizer, texts)
    probe = Needle(f"{_longest(tokenizer, ADJECTIVES)} {_longest(tokenizer, NOUNS)}", "9" * digits)  # the costliest needle
    _check_room(tokenizer, lengths, probe, pool.tokens, f"{where}.lengths", f"{where}.haystack", extra=extra)
    return pool


def needle_grid(tokenizer, texts: Iterable[str], lengths: Sequence[int], depths: Sequence[float], per_cell: int, seed: int = 0,
                digits: int = 4, where: str = "needles") -> list[NeedleItem]:
    """`per_cell` eval items for every (length, depth), ordered by length, depth, then replicate. Each
    replicate of a length is one haystack and one needle, placed at every depth: a cell differs from
    its neighbour in depth only. The same arguments give the same items. `where` names the spec in errors."""
    _check_depths(depths, f"{where}.depths")
    if per_cell < 1:
        raise UserError(f"{where}.per_cell", f"is {per_cell}", "give at least 1 item per cell")
    pool = _pool(tokenizer, texts, list(lengths), digits, where)
    items = []
    for length in lengths:
        haystacks = [_haystack(pool, random.Random(f"needle-grid:{seed}:{length}:{r}"), length, digits, where) for r in range(per_cell)]
        items += [_item(tokenizer, filler, needle, length, depth) for depth in depths for filler, needle in haystacks]
    return items


def needle_documents(tokenizer, texts: Iterable[str], lengths: Sequence[int], count: int, seed: int = 0, digits: int = 4,
                     where: str = "needles") -> list[dict[str, Any]]:
    """`count` training documents {"text", "length", "depth", "key", "value"}: a haystack with the needle,
    the question, the answer prefix and the answer, about `length` tokens in all (drawn from `lengths`;
    the answer included), the needle at a depth uniform in [0, 1]. Seeded apart from needle_grid's
    items: the same seed gives other haystacks and needles."""
    longest_answer = len(_ids(tokenizer, ANSWER.format(value="9" * max(digits, 1))))
    pool = _pool(tokenizer, texts, list(lengths), digits, where, extra=longest_answer)
    documents = []
    for i in range(count):
        rng = random.Random(f"needle-train:{seed}:{i}")
        length, depth = rng.choice(list(lengths)), rng.random()
        filler, needle = _haystack(pool, rng, length, digits, where)
        item = _item(tokenizer, filler, needle, length, depth, budget=length - len(_ids(tokenizer, needle.answer)))
        documents.append({"text": item.prompt + needle.answer, "length": length, "depth": item.depth_actual,
                          "key": needle.key, "value": needle.value})
    return documents
