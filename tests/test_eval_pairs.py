"""Held-out preference pairs (`pairs:<name>`): the pair file's checks, the scorer on known
log-likelihoods, the prompt used as it is (never wrapped in the chat template again), the suites and
their paths. The slow test runs the task through lighteval on a tiny random LLaMA and checks every
number against a direct forward pass over the tokens a preference trainer scores."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from smolrecipe.errors import UserError
from smolrecipe.eval import pairs
from smolrecipe.eval import runner as evaluate
from smolrecipe.eval import tasks as eval_tasks
from smolrecipe.recipe import suites as suites_registry

ROOT = Path(__file__).resolve().parent.parent
EOS = "<|im_end|>"


def chatml(question: str) -> str:
    """A prompt as the preference data preparation renders it (tokenizer/chatml.jinja)."""
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


PAIRS = [
    {"prompt": chatml("What is 3 + 4?"), "chosen": "3 + 4 = 7.", "rejected": "It is 9, or maybe 12, I am not sure at all."},
    {"prompt": chatml("Which river flows through Ashford?"), "chosen": "The Lune.", "rejected": "Wend"},
    {"prompt": chatml("Name a colour."), "chosen": "Red.", "rejected": "A colour is a colour is a colour."},
    {"prompt": chatml("List two fruits as bullets."), "chosen": "- apple\n- pear", "rejected": "apple pear"},
    {"prompt": chatml("Say hello."), "chosen": "Hello!", "rejected": "Goodbye."},
    {"prompt": chatml("What is 2 x 5?"), "chosen": "10", "rejected": "2 x 5 is 25."},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_parquet(path: Path, rows: list[dict], columns=("prompt", "chosen", "rejected")) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({c: [row.get(c) for row in rows] for c in columns}), path)
    return path


@pytest.fixture
def parquet(tmp_path) -> Path:
    """heldout.parquet as the preference data preparation writes it (string columns)."""
    return write_parquet(tmp_path / "heldout.parquet", PAIRS)


# --- the pair file -------------------------------------------------------------------------------


def test_parquet_and_jsonl_read_the_same_pairs_and_the_limit_spreads_over_the_file(parquet, tmp_path):
    read = pairs.load_pairs(parquet)
    assert read == [pairs.Pair(**row) for row in PAIRS]
    extra = [{**row, "id": i, "score": 0.5} for i, row in enumerate(PAIRS)]  # other columns are ignored
    assert pairs.load_pairs(write_jsonl(tmp_path / "pairs.jsonl", extra)) == read
    assert pairs.load_pairs(write_parquet(tmp_path / "extra.parquet", extra, ("id", "prompt", "chosen", "rejected", "score"))) == read
    assert pairs.select(read, None) == read == pairs.select(read, 6) == pairs.select(read, 99)
    assert pairs.select(read, 2) == [read[0], read[3]] and pairs.select(read, 4) == [read[0], read[1], read[3], read[4]]


def _bad(tmp_path: Path, case: str) -> Path:
    rows = [dict(row) for row in PAIRS[:3]]
    if case == "no such file":
        return tmp_path / "heldout.parquet"
    if case == "csv":
        (tmp_path / "pairs.csv").write_text("prompt,chosen,rejected\n")
        return tmp_path / "pairs.csv"
    if case == "garbage parquet":
        (tmp_path / "heldout.parquet").write_bytes(b"not a parquet file at all")
        return tmp_path / "heldout.parquet"
    if case == "parquet without rejected":
        return write_parquet(tmp_path / "heldout.parquet", rows, ("prompt", "chosen"))
    if case == "parquet with other names":
        return write_parquet(tmp_path / "heldout.parquet", [{"question": "q", "good": "a", "bad": "b"}], ("question", "good", "bad"))
    if case == "empty parquet":
        return write_parquet(tmp_path / "heldout.parquet", [])
    if case == "null answer":
        rows[1]["chosen"] = None
        return write_parquet(tmp_path / "heldout.parquet", rows)
    if case == "jsonl without chosen":
        return write_jsonl(tmp_path / "pairs.jsonl", [{k: v for k, v in row.items() if k != "chosen"} for row in rows])
    if case == "jsonl line without rejected":
        rows[2].pop("rejected")
        return write_jsonl(tmp_path / "pairs.jsonl", rows)
    if case == "empty jsonl":
        (tmp_path / "pairs.jsonl").write_text("\n")
        return tmp_path / "pairs.jsonl"
    if case == "messages instead of text":
        rows[0]["chosen"] = [{"role": "assistant", "content": "7"}]
        return write_jsonl(tmp_path / "pairs.jsonl", rows)
    if case == "blank prompt":
        rows[1]["prompt"] = "  "
        return write_jsonl(tmp_path / "pairs.jsonl", rows)
    if case == "not json":
        (tmp_path / "pairs.jsonl").write_text(json.dumps(rows[0]) + "\n{oops\n")
        return tmp_path / "pairs.jsonl"
    raise AssertionError(case)


@pytest.mark.parametrize("case, where, message, fix", [
    ("no such file", "", "no such pair file", "tools/prepare_data.py RECIPE --stage-data"),
    ("csv", "", "is a .csv file", "give a .parquet or .jsonl file"),
    ("garbage parquet", "", "is not a readable Parquet file", "tools/prepare_data.py"),
    ("parquet without rejected", "", "has no rejected column", "every pair needs prompt, chosen, rejected"),
    ("parquet with other names", "", "has no prompt, chosen, rejected columns", "every pair needs prompt, chosen, rejected"),
    ("empty parquet", "", "holds no pairs", "heldout_fraction > 0"),
    ("null answer", " row 2, chosen", "is None, not text", "as strings"),
    ("jsonl without chosen", "", "has no chosen column", "every pair needs"),
    ("jsonl line without rejected", " line 3, rejected", "is missing", "every pair has prompt, chosen, rejected"),
    ("empty jsonl", "", "holds no pairs", "pairs.<name>.source in eval/suites.yaml"),
    ("messages instead of text", " line 1, chosen", "not text", "as strings"),
    ("blank prompt", " line 2, prompt", "is empty", "chat-rendered conversation"),
    ("not json", " line 2", "is not JSON", "one JSON object per line"),
])
def test_a_bad_pair_file_is_one_line_naming_the_file_and_the_fix(tmp_path, case, where, message, fix):
    path = _bad(tmp_path, case)
    with pytest.raises(UserError) as err:
        pairs.load_pairs(path)
    assert err.value.field == f"{path}{where}" and message in err.value.problem and fix in err.value.fix, err.value.line()
    assert "\n" not in err.value.line()


# --- scoring -------------------------------------------------------------------------------------


class Response:
    """What lighteval's transformers model returns for a log-likelihood request: a summed
    log-probability per continuation and its token ids, padded with -1 to the longest."""

    def __init__(self, logprobs, tokens):
        width = max(len(t) for t in tokens)
        self.logprobs = list(logprobs)
        self.output_tokens = [list(t) + [-1] * (width - len(t)) for t in tokens]
        self.text = []


def test_the_scorer_on_known_log_likelihoods():
    # chosen: 2 tokens + eos, -3.0 in all; rejected: 5 tokens + eos, -4.5: likelier per token, not in sum
    chosen, rejected = pairs.answer_sides([-3.0, -4.5], [[5, 6, 2], [7, 8, 9, 10, 11, 2]])
    assert (chosen, rejected) == (pairs.Side(-3.0, 3), pairs.Side(-4.5, 6))
    assert pairs.pair_scores(chosen, rejected) == {"pair_acc": 1.0, "pair_acc_norm": 0.0, "margin": 1.5}
    assert pairs.pair_scores(rejected, chosen) == {"pair_acc": 0.0, "pair_acc_norm": 1.0, "margin": -1.5}
    assert pairs.pair_scores(chosen, chosen)["pair_acc"] == 0.0  # a tie is not a preference


def test_the_prompts_trailing_newline_is_taken_off_both_answers():
    """lighteval moves the context's trailing whitespace into each continuation ("\\n" + answer); the
    third, empty, continuation scores "\\n" alone (token 201, -2.0 nats), which comes off both sides."""
    got = pairs.answer_sides([-5.0, -6.5, -2.0], [[201, 5, 6, 2], [201, 7, 8, 9, 2], [201]])
    assert got == (pairs.Side(-3.0, 3), pairs.Side(-4.5, 4))
    # merged with an answer's first token ("\n-" as one token): both sides keep it, so they stay comparable
    assert pairs.answer_sides([-5.0, -6.5, -2.0], [[300, 6, 2], [201, 7, 8, 9, 2], [201]]) == (pairs.Side(-5.0, 3), pairs.Side(-6.5, 5))
    pair = pairs.Pair(chatml("Hi"), "Hello.", "Bye.")
    assert pairs.continuations(pair, EOS) == [f"Hello.{EOS}", f"Bye.{EOS}", ""]
    assert pairs.continuations(pairs.Pair("Q: hi\nA:", "hello", "bye"), EOS) == [f"hello{EOS}", f"bye{EOS}"]  # nothing to take off


def test_lighteval_metric_reads_padded_tokens_and_averages_over_pairs():
    scorer = eval_tasks.PairScores()
    doc = None  # the scores need only the model's response
    first = scorer.compute(doc, Response([-5.0, -6.5, -2.0], [[201, 5, 6, 2], [201, 7, 8, 9, 2], [201]]))
    second = scorer.compute(doc, Response([-9.0, -4.0], [[5, 2], [7, 8, 9, 10, 2]]))
    assert first == {"pair_acc": 1.0, "pair_acc_norm": 1.0, "margin": 1.5}  # "\n" off both: -3 vs -4.5; -3/3 vs -4.5/4
    assert second == {"pair_acc": 0.0, "pair_acc_norm": 0.0, "margin": -5.0}  # -9/2 vs -4/5
    assert {name: float(np.mean([first[name], second[name]])) for name in eval_tasks.PAIR_METRICS} == \
        {"pair_acc": 0.5, "pair_acc_norm": 0.5, "margin": -1.75}


# --- the prompt is used as it is -----------------------------------------------------------------


class ChatTokenizer:
    """A tokenizer with a chat template: what wrapping the prompt again would look like."""

    eos_token = EOS

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return "".join(chatml(m["content"]) for m in messages)


def _context(data_dir: Path, files: dict[str, Path], chat: bool = True, limit: int | None = None) -> eval_tasks.TaskContext:
    return eval_tasks.TaskContext(tokenizer=ChatTokenizer(), data_dir=data_dir, local={}, chat=chat, pairs=files, limit=limit)


@pytest.mark.parametrize("chat", [True, False])
def test_the_prompt_is_never_wrapped_in_the_chat_template_again(parquet, tmp_path, chat):
    from lighteval.tasks.prompt_manager import PromptManager

    from smolrecipe.eval.lighteval_session import lighteval_model_config

    [config] = eval_tasks.build_tasks(_context(tmp_path / "data", {"toy": parquet}, chat=chat, limit=4), ["pairs:toy"])
    assert config.name == "pairs:toy" and len(config.metrics) == 1
    lines = (tmp_path / "data" / "pairs-toy" / "test.jsonl").read_text().splitlines()
    docs = [config.prompt_function(json.loads(line), "pairs:toy") for line in lines]
    limited = [PAIRS[i] for i in (0, 1, 3, 4)]  # the limit: 4 pairs spread over the 6
    assert [doc.query for doc in docs] == [row["prompt"] for row in limited]  # as written, whatever `chat` says
    assert [doc.choices for doc in docs] == [[row["chosen"] + EOS, row["rejected"] + EOS, ""] for row in limited]
    assert all(doc.instruction is None and not doc.fewshot_samples for doc in docs)
    # What lighteval's transformers model sends: our model config turns its own chat template off,
    # so the context is the query itself; with the template on, the prompt would be wrapped again.
    model_config = lighteval_model_config(tmp_path / "hf", 1, tmp_path / "cache")
    assert model_config.override_chat_template is False and model_config.system_prompt is None
    plain = PromptManager(use_chat_template=model_config.override_chat_template, tokenizer=ChatTokenizer())
    assert [plain.prepare_prompt(doc) for doc in docs] == [row["prompt"] for row in limited]
    wrapped = PromptManager(use_chat_template=True, tokenizer=ChatTokenizer()).prepare_prompt(docs[0])
    assert wrapped == chatml(PAIRS[0]["prompt"]) != PAIRS[0]["prompt"]


def test_a_tokenizer_without_eos_cannot_score_pairs(parquet, tmp_path):
    ctx = _context(tmp_path, {"toy": parquet})
    ctx.tokenizer = type("NoEos", (), {"eos_token": None})()
    with pytest.raises(UserError, match="has no eos token"):
        eval_tasks.build_tasks(ctx, ["pairs:toy"])


# --- suites and paths ----------------------------------------------------------------------------


def test_suites_file_has_the_pairs_suites_and_their_files(monkeypatch):
    suites, raw = suites_registry.load_suites()
    assert suites["pairs_tiny"].tasks == ["pairs:tiny"] and suites["pairs_tiny"].limit is None
    assert suites["pairs_llama500m"].tasks == ["pairs:llama500m"] and suites["pairs_llama500m"].limit == 1000
    sources = evaluate.pairs_specs(raw, suites["pairs_tiny"])
    assert set(sources) == {"tiny", "llama500m"}
    for name in sources:  # every suite's tasks are known once the pair files are given
        known = eval_tasks.known_tasks(evaluate.slice_specs(raw, suites[f"pairs_{name}"], {}),
                                       evaluate.qa_specs(raw, suites[f"pairs_{name}"]), sources)
        assert set(suites[f"pairs_{name}"].tasks) <= set(known)
    # where each recipe's paths.data puts its preference stage's held-out pairs
    monkeypatch.delenv("SMOLRECIPE_DATA", raising=False)
    assert evaluate.pair_file("tiny", sources["tiny"]) == ROOT / "runs" / "data" / "tiny" / "preference" / "heldout.parquet"
    monkeypatch.setenv("SMOLRECIPE_DATA", "/scratch/me/data")
    assert evaluate.pair_file("tiny", sources["tiny"]) == Path("/scratch/me/data/tiny/preference/heldout.parquet")
    monkeypatch.setenv("SCRATCH", "/scratch/me")
    assert evaluate.pair_file("llama500m", sources["llama500m"]) == Path("/scratch/me/smolrecipe/data/llama500m/preference/heldout.parquet")
    monkeypatch.delenv("SCRATCH")
    with pytest.raises(UserError, match=r"^pairs\.llama500m\.source: environment variable \$SCRATCH is not set"):
        evaluate.pair_file("llama500m", sources["llama500m"])
    own = suites_registry.Suite(name="mine", tasks=["pairs:tiny"], pairs={"tiny": {"source": "/data/p.jsonl"}})
    assert evaluate.pairs_specs(raw, own)["tiny"] == "/data/p.jsonl"  # a suite's own file wins
    assert evaluate.hub_skips(["pairs:tiny"], suites["quick"], raw, {}, {}) == {}  # a local file: never skipped offline


def test_pairs_recipe_paths_match_the_recipes():
    """The suites' defaults are the recipes' paths.data, where their preference stages write heldout.parquet."""
    import yaml

    raw = yaml.safe_load((ROOT / "eval" / "suites.yaml").read_text())["pairs"]
    for recipe in ("tiny", "llama500m"):
        data = yaml.safe_load((ROOT / "recipes" / f"{recipe}.yaml").read_text())
        assert {"name": "preference", "kind": "preference"}.items() <= next(s for s in data["stages"] if s["kind"] == "preference").items()
        assert raw[recipe]["source"] == f"{data['paths']['data']}/{recipe}/preference/heldout.parquet"


def test_bad_pairs_section_names_the_field(tmp_path):
    (tmp_path / "suites.yaml").write_text("suites:\n  p:\n    tasks: [pairs:x]\n    pairs: {x: {path: x.parquet}}\n")
    with pytest.raises(UserError, match=rf"^{re.escape('suites.p.pairs.x')}"):
        suites_registry.load_suites(tmp_path / "suites.yaml")


# --- a real lighteval run ------------------------------------------------------------------------


@pytest.fixture
def on_cpu(monkeypatch):
    """fp32 on the CPU, as the direct computation: on a GPU, lighteval's model scores in bf16 (our model
    config), which a comparison to 1e-4 is not about."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture(scope="module")
def random_chat_hf(tmp_path_factory, hf_tokenizer) -> Path:
    """A random tiny LLaMA with the tiny recipe's tokenizer (ChatML, eos <|im_end|>), as a transformers folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(hf_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=1, max_position_embeddings=128, tie_word_embeddings=True,
                         bos_token_id=hf_tokenizer.bos_token_id, eos_token_id=hf_tokenizer.eos_token_id)
    out = tmp_path_factory.mktemp("random-chat") / "hf"
    LlamaForCausalLM(config).eval().save_pretrained(out)
    hf_tokenizer.save_pretrained(out)
    return out


def trainer_sides(hf_dir: Path, rows: list[dict]) -> list[tuple[pairs.Side, pairs.Side]]:
    """(chosen, rejected) of each pair computed directly, on the tokens a preference trainer scores
    (TRL: the prompt tokenized alone, then prompt + answer + eos; the answer's tokens are the rest)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(hf_dir))
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
    out = []
    for row in rows:
        prompt = tokenizer(row["prompt"]).input_ids
        sides = []
        for answer in (row["chosen"], row["rejected"]):
            ids = tokenizer(row["prompt"] + answer + tokenizer.eos_token).input_ids
            assert ids[: len(prompt)] == prompt and ids[-1] == tokenizer.eos_token_id
            with torch.no_grad():
                logprobs = model(torch.tensor([ids])).logits.log_softmax(-1)[0]
            sides.append(pairs.Side(sum(float(logprobs[i - 1, ids[i]]) for i in range(len(prompt), len(ids))), len(ids) - len(prompt)))
        out.append(tuple(sides))
    return out


def trainer_scores(hf_dir: Path, rows: list[dict]) -> dict[str, float]:
    per_pair = [pairs.pair_scores(*sides) for sides in trainer_sides(hf_dir, rows)]
    return {name: float(np.mean([p[name] for p in per_pair])) for name in pairs.METRICS}


@pytest.mark.slow
def test_each_answer_is_scored_on_the_trainers_tokens(random_chat_hf, parquet, tmp_path, on_cpu):
    """Pair by pair, through lighteval's own transformers model with our model config: each answer's
    log-likelihood and token count (eos included, the prompt's newline not) are the trainer's."""
    from transformers import AutoTokenizer

    from smolrecipe.eval.lighteval_session import lighteval_model_config, lighteval_session

    ctx = _context(tmp_path / "data", {"toy": parquet})
    ctx.tokenizer = AutoTokenizer.from_pretrained(str(random_chat_hf))
    [config] = eval_tasks.build_tasks(ctx, ["pairs:toy"])
    docs = [config.prompt_function({"id": i}, "pairs:toy") for i in range(len(PAIRS))]
    with lighteval_session():
        from lighteval.models.transformers.transformers_model import TransformersModel

        model = TransformersModel(lighteval_model_config(random_chat_hf, 4, tmp_path / "cache"))
        model._cache = None  # its sample cache is not what is tested here
        responses = model.loglikelihood(docs)
    for response, (chosen, rejected) in zip(responses, trainer_sides(random_chat_hf, PAIRS), strict=True):
        tokens = [[int(t) for t in ids if int(t) >= 0] for ids in response.output_tokens]
        got = pairs.answer_sides(response.logprobs, tokens)
        assert [side.tokens for side in got] == [chosen.tokens, rejected.tokens]
        assert [side.logprob for side in got] == pytest.approx([chosen.logprob, rejected.logprob], abs=1e-4)


@pytest.mark.slow
def test_pairs_run_through_lighteval_and_equal_the_direct_computation(random_chat_hf, parquet, tmp_path, on_cpu):
    """A chat model (kind sft: chat prompts on) and a base model (kind pretrain) get the same prompt,
    as it is: their numbers are the trainer's over the same tokens. A limit takes pairs spread over the file."""
    suites, raw = suites_registry.load_suites()
    raw = {**raw, "pairs": {"toy": {"source": str(parquet)}}}
    suite = suites_registry.Suite(name="pairs_toy", tasks=["pairs:toy"])
    chat = evaluate.run_suite(random_chat_hf, {"kind": "sft"}, suite, raw, tmp_path / "chat", batch_size=4).data
    base = evaluate.run_suite(random_chat_hf, {"kind": "pretrain"}, suite, raw, tmp_path / "base", limit=4, batch_size=4).data
    assert chat["chat_prompts"] is True and base["chat_prompts"] is False and base["limit"] == 4
    assert json.loads((tmp_path / "chat" / "pairs_toy.json").read_text()) == json.loads(json.dumps(chat))
    assert not (tmp_path / "chat" / "pairs_toy.answers.jsonl").exists()  # nothing generated
    for data, rows in ((chat, PAIRS), (base, [PAIRS[i] for i in (0, 1, 3, 4)])):
        result = data["tasks"]["pairs:toy"]
        assert set(result) == {"pair_acc", "pair_acc_stderr", "pair_acc_norm", "pair_acc_norm_stderr", "margin", "margin_stderr", "n"}
        assert result["n"] == len(rows) == data["items"] and data["sources"]["pairs:toy"] == str(parquet)
        expected = trainer_scores(random_chat_hf, rows)
        assert {name: result[name] for name in pairs.METRICS} == pytest.approx(expected, abs=1e-4), (result, expected)


@pytest.mark.slow
def test_a_bad_pair_file_stops_the_suite_before_any_work(random_chat_hf, tmp_path):
    suites, raw = suites_registry.load_suites()
    path = _bad(tmp_path, "parquet without rejected")
    raw = {**raw, "pairs": {"toy": {"source": str(path)}}}
    with pytest.raises(UserError, match=r"heldout.parquet: has no rejected column"):
        evaluate.run_suite(random_chat_hf, {}, suites_registry.Suite(name="p", tasks=["ppl:web", "pairs:toy"]), raw, tmp_path / "out")
    assert not (tmp_path / "out").exists()
