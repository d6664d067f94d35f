"""Needle in a haystack: the haystacks (smolrecipe.data.needles), the scorer and the suites entry
(smolrecipe.eval.needle, smolrecipe.eval.runner), the heatmap in the run report (smolrecipe.report.needles)."""

from __future__ import annotations

import json
import re
from collections import defaultdict, deque
from pathlib import Path

import pytest

from smolrecipe.data import needles
from smolrecipe.data.needles import Needle, SentencePool, haystack_prompt, needle_documents, needle_grid, split_sentences
from smolrecipe.errors import UserError
from smolrecipe.eval import needle as eval_needle
from smolrecipe.eval import runner
from smolrecipe.recipe import suites as suites_registry
from smolrecipe.recipe.suites import NeedleSpec, Suite
from smolrecipe.report.run_report import write_report

ROOT = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LENGTHS = [96, 128, 256, 512]
DEPTHS = [0.0, 0.25, 0.5, 0.75, 1.0]


@pytest.fixture(scope="module")
def prose(demo_corpus) -> list[str]:
    """The demo corpus's prose documents: the filler."""
    return [json.loads(line)["text"] for path in sorted((demo_corpus / "corpus" / "prose").glob("*.jsonl"))
            for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def grid(hf_tokenizer, prose):
    return needle_grid(hf_tokenizer, prose, LENGTHS, DEPTHS, per_cell=2, seed=0)


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# --- haystacks ------------------------------------------------------------------------------------


def test_sentences_split_at_sentence_ends_and_line_breaks():
    assert split_sentences('It rained. "Go!" she said.  Why?\n\nA heading\nQ: When?  Answer: Never.') == \
        ["It rained.", '"Go!"', "she said.", "Why?", "A heading", "Q: When?", "Answer: Never."]


def test_every_prompt_has_exactly_its_length_and_the_needle_once(grid, hf_tokenizer):
    assert len(grid) == len(LENGTHS) * len(DEPTHS) * 2
    assert [(i.length, i.depth) for i in grid[::2]] == [(n, d) for n in LENGTHS for d in DEPTHS]
    for item in grid:
        assert len(item.input_ids) == item.length
        needle = Needle(item.key, item.value)
        text = hf_tokenizer.decode(item.input_ids)
        # the key in the needle, the question and the answer prefix; the value in the needle alone
        assert text.lower().count(item.key) == 3 and text.count(item.value) == 1 and text.count(needle.sentence) == 1
        assert text.endswith(needle.tail) and item.prompt.endswith(needle.tail)
        assert re.fullmatch(r"[1-9]\d{3}", item.value) and item.key.split()[0] in needles.ADJECTIVES
        # the needle's own tokens where the item says it starts
        own = ids(hf_tokenizer, needle.sentence if item.needle_start == 0 else " " + needle.sentence)
        assert item.input_ids[item.needle_start:item.needle_start + len(own)] == own
        assert item.filler_tokens == item.length - len(own) - len(ids(hf_tokenizer, needle.tail))


def test_the_needle_sits_within_a_sentence_of_its_depth_monotone_in_it(grid, hf_tokenizer, prose):
    longest = max(len(x) for x in SentencePool(hf_tokenizer, prose).ids)
    for item in grid:
        assert abs(item.needle_start - item.depth * item.filler_tokens) <= longest
        assert item.depth_actual == item.needle_start / item.filler_tokens
        if item.depth == 0.0:
            assert item.needle_start == 0
        if item.depth == 1.0:  # right before the question
            assert item.needle_start == item.filler_tokens
    replicates: dict[tuple[int, str], list[int]] = {}
    for item in grid:  # one haystack and one needle per replicate, placed at every depth
        replicates.setdefault((item.length, item.key + item.value), []).append(item.needle_start)
    assert len(replicates) == 2 * len(LENGTHS)
    assert all(starts == sorted(starts) and len(starts) == len(DEPTHS) for starts in replicates.values())


def test_the_grid_is_reproducible_from_its_seed(grid, hf_tokenizer, prose):
    again = needle_grid(hf_tokenizer, prose, LENGTHS, DEPTHS, per_cell=2, seed=0)
    assert again == grid
    other = needle_grid(hf_tokenizer, prose, LENGTHS, DEPTHS, per_cell=2, seed=1)
    assert [i.input_ids for i in other] != [i.input_ids for i in grid]


def test_training_documents_are_their_length_with_the_answer(hf_tokenizer, prose, grid):
    docs = needle_documents(hf_tokenizer, prose, [128, 512], count=12, seed=0)
    assert docs == needle_documents(hf_tokenizer, prose, [128, 512], count=12, seed=0)
    assert {d["length"] for d in docs} == {128, 512} and len({round(d["depth"], 3) for d in docs}) > 6
    for doc in docs:
        needle = Needle(doc["key"], doc["value"])
        text = doc["text"]
        assert set(doc) == {"text", "length", "depth", "key", "value"} and 0 <= doc["depth"] <= 1
        assert abs(len(ids(hf_tokenizer, text)) - doc["length"]) <= 3
        assert text.endswith("\n" + needle.question + "\n" + needle.answer_prefix + " " + doc["value"] + ".")
        # the needle, and the answer prefix + answer, which states it again
        assert text.count(needle.sentence) == 2 and text.count(doc["value"]) == 2
    # seeded apart from the eval grid's: other needles for the same seed
    assert {(d["key"], d["value"]) for d in docs}.isdisjoint({(i.key, i.value) for i in grid})


def test_haystack_prompt_from_given_sentences(hf_tokenizer):
    sentences = [f"The miller counted {w} sacks of flour by the mill." for w in ("two", "three", "four", "five", "six", "seven")] * 4
    needle = Needle("brave owl", "7315")
    item = haystack_prompt(hf_tokenizer, sentences, 120, 0.5, needle)
    assert len(item.input_ids) == 120 and hf_tokenizer.decode(item.input_ids).count("7315") == 1
    assert item.prompt.startswith(sentences[0]) and " The special magic number for brave owl is 7315. " in item.prompt
    with pytest.raises(UserError, match="^sentences: the filler contains the needle's key 'brave owl'"):
        haystack_prompt(hf_tokenizer, ["A brave owl sat on the roof."] * 40, 120, 0.5, needle)
    with pytest.raises(UserError, match="^depth: depth -0.1 is outside"):
        haystack_prompt(hf_tokenizer, sentences, 120, -0.1, needle)


@pytest.mark.parametrize("change, field", [
    ({"lengths": [128, 2_000_000]}, r"needles\.haystack: holds [\d,]+ tokens of usable sentences"),
    ({"lengths": [128, 12]}, r"needles\.lengths: 12 tokens cannot hold the needle"),
    ({"depths": [0.0, 1.5]}, r"needles\.depths: depth 1\.5 is outside \[0, 1\]"),
    ({"digits": 0}, r"needles\.digits: is 0"),
    ({"per_cell": 0}, r"needles\.per_cell: is 0"),
])
def test_bad_grids_are_one_line_errors(hf_tokenizer, prose, change, field):
    args = {"lengths": [128], "depths": [0.5], "per_cell": 1, "digits": 4} | change
    with pytest.raises(UserError, match=f"^{field}"):
        needle_grid(hf_tokenizer, prose, **args)


def test_short_texts_cannot_fill_a_haystack(hf_tokenizer):
    with pytest.raises(UserError, match=r"^mine\.haystack: holds \d+ tokens"):
        needle_documents(hf_tokenizer, ["One short sentence. And another one."], [128], count=1, where="mine")


# --- scoring --------------------------------------------------------------------------------------


def test_first_digits():
    assert eval_needle.first_digits(" 4821.") == "4821"
    assert eval_needle.first_digits(" is 48 21") == "48"
    assert eval_needle.first_digits(" none") is None


def test_the_scorer_on_known_answers(grid):
    spec = NeedleSpec(haystack="x", lengths=LENGTHS, depths=DEPTHS, per_cell=2, digits=4)
    # the grid: by length, depth, then replicate. Two cells of a short haystack can hold the needle at
    # the same sentence boundary (the same prompt): each call takes the next item with its prompt.
    index = defaultdict(deque)
    for i, item in enumerate(grid):
        index[tuple(item.input_ids)].append(i)
    batches = []

    def generate(prompts: list[list[int]]) -> list[str]:
        # right at depth 0 (both replicates) and at depth 0.5 (the first); at 128 tokens, one digit off
        batches.append({len(p) for p in prompts})
        out = []
        for prompt in prompts:
            i = index[tuple(prompt)].popleft()
            item = grid[i]
            right = item.depth == 0.0 or (item.depth == 0.5 and i % 2 == 0)
            value = item.value if item.length != 128 else item.value[:-1] + str((int(item.value[-1]) + 1) % 10)
            out.append(f" {value}. The" if right else " nothing here 12")
        return out

    metrics, records = eval_needle.score_needles("needle:toy", spec, grid, generate, batch_size=3, context=128)
    assert all(len(lengths) == 1 for lengths in batches)  # one length per batch: nothing padded
    row = {"0.0": 1.0, "0.25": 0.0, "0.5": 0.5, "0.75": 0.0, "1.0": 0.0}
    assert metrics["grid"] == {"96": row, "128": dict.fromkeys(row, 0.0), "256": row, "512": row}
    assert metrics["per_length"] == {"96": 0.3, "128": 0.0, "256": 0.3, "512": 0.3}
    assert metrics["acc"] == pytest.approx(0.9 / 4) and metrics["n"] == 40
    assert [metrics[k] for k in ("lengths", "depths", "per_cell", "digits", "context")] == [LENGTHS, DEPTHS, 2, 4, 128]
    # a right and a wrong answer per length where there is one
    assert [(e["length"], e["correct"]) for e in metrics["examples"]] == [(96, True), (96, False), (128, False), (256, True),
                                                                          (256, False), (512, True), (512, False)]
    assert len(records) == 40 and records[0]["task"] == "needle:toy" and set(records[0]["scores"]) == {"exact_match"}
    assert sum(r["scores"]["exact_match"] for r in records) == 9


def test_a_model_answers_greedily_from_the_ids(grid, hf_tokenizer):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(hf_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=128)).eval()
    items = [i for i in grid if i.length == 96][:3]
    answers = eval_needle.answer_items(items, eval_needle.model_generate(model, hf_tokenizer, 6), batch_size=2)
    with torch.no_grad():
        first = model(torch.tensor([items[0].input_ids])).logits[0, -1].argmax().item()
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)
    assert answers[0].startswith(hf_tokenizer.decode([first]))


# --- the suites file and the runner ---------------------------------------------------------------


def test_suites_file_has_the_needle_suites(monkeypatch, tmp_path):
    suites, raw = suites_registry.load_suites()
    assert suites["needle_tiny"].tasks == ["needle:tiny"] and suites["needle_llama500m"].tasks == ["needle:llama500m"]
    specs = runner.needle_specs(raw, suites["needle_tiny"])
    assert specs["tiny"].lengths == [128, 256, 512, 1024] and specs["tiny"].depths == DEPTHS
    assert (specs["tiny"].per_cell, specs["tiny"].digits) == (4, 4)
    assert specs["llama500m"].lengths == [1024, 2048, 4096, 8192, 16384] and specs["llama500m"].digits == 7
    from smolrecipe.eval.tasks import known_tasks

    assert {"needle:tiny", "needle:llama500m"} <= set(known_tasks({}, {}, {}, specs))
    (tmp_path / "heldout" / "prose").mkdir(parents=True)  # where make demo writes the held-out prose
    monkeypatch.setenv("SMOLRECIPE_DATA", str(tmp_path))
    assert runner.needle_haystack("tiny", specs["tiny"].haystack) == tmp_path / "heldout" / "prose"
    monkeypatch.delenv("SCRATCH", raising=False)
    with pytest.raises(UserError, match=r"^needles\.llama500m\.haystack: environment variable \$SCRATCH is not set"):
        runner.needle_haystack("llama500m", specs["llama500m"].haystack)
    monkeypatch.setenv("SCRATCH", "/nonexistent/scratch")
    with pytest.raises(UserError, match=r"^needles\.llama500m\.haystack: /nonexistent/scratch/smolrecipe/data/heldout/web does not exist"):
        runner.needle_haystack("llama500m", specs["llama500m"].haystack)
    own = Suite(name="mine", tasks=["needle:tiny"], needles={"tiny": {"haystack": "/data/h", "lengths": [64], "depths": [0.5]}})
    assert runner.needle_specs(raw, own)["tiny"].haystack == "/data/h"


@pytest.mark.parametrize("spec, field", [
    ("{haystack: h, lengths: [128], depths: [0.0, 1.5]}", "suites.yaml.needles.toy.depths.1"),
    ("{haystack: h, lengths: [], depths: [0.5]}", "suites.yaml.needles.toy.lengths"),
    ("{haystack: h, lengths: [0], depths: [0.5]}", "suites.yaml.needles.toy.lengths.0"),
    ("{haystack: h, lengths: [128, 128], depths: [0.5]}", "suites.yaml.needles.toy.lengths"),
    ("{haystack: h, lengths: [128], depths: [0.5], per_cell: 0}", "suites.yaml.needles.toy.per_cell"),
    ("{haystack: h, lengths: [128], depths: [0.5], digits: 19}", "suites.yaml.needles.toy.digits"),
    ("{haystak: h, lengths: [128], depths: [0.5]}", "suites.yaml.needles.toy.haystack"),
])
def test_a_bad_needle_spec_names_its_field(tmp_path, spec, field):
    (tmp_path / "suites.yaml").write_text(f"needles:\n  toy: {spec}\nsuites:\n  n:\n    tasks: [needle:toy]\n")
    with pytest.raises(UserError, match=rf"^{re.escape(field)}: "):
        suites_registry.load_suites(tmp_path / "suites.yaml")
    (tmp_path / "suites.yaml").write_text(f"suites:\n  n:\n    tasks: [needle:toy]\n    needles:\n      toy: {spec}\n")
    with pytest.raises(UserError, match=rf"^{re.escape(field.replace('suites.yaml.', 'suites.n.'))}: "):
        suites_registry.load_suites(tmp_path / "suites.yaml")


def test_grid_items_read_the_haystack_folder(tmp_path, hf_tokenizer, prose):
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / "a.jsonl").write_text("".join(json.dumps({"body": t}) + "\n" for t in prose))
    spec = NeedleSpec(haystack=str(tmp_path / "h"), text_field="body", lengths=[96, 128], depths=[0.0, 1.0], per_cell=3)
    items = eval_needle.grid_items("toy", spec, tmp_path / "h", hf_tokenizer)
    assert len(items) == 12 and len(eval_needle.grid_items("toy", spec, tmp_path / "h", hf_tokenizer, limit=5)) == 4
    with pytest.raises(UserError, match=r"^needles\.toy\.text_field: 'text' is not a field"):
        eval_needle.grid_items("toy", spec.model_copy(update={"text_field": "text"}), tmp_path / "h", hf_tokenizer)
    with pytest.raises(UserError, match=r"^needles\.toy\.haystack: .* does not exist"):
        eval_needle.grid_items("toy", spec, tmp_path / "none", hf_tokenizer)


def test_run_suite_writes_the_needle_results(tmp_path, hf_tokenizer, prose):
    """The runner end to end on a random tiny LLaMA: the results' shape, the haystack as the source, every answer beside them."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    hf = tmp_path / "hf"
    LlamaForCausalLM(LlamaConfig(vocab_size=len(hf_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=128)).save_pretrained(hf)
    hf_tokenizer.save_pretrained(hf)
    (tmp_path / "heldout").mkdir()
    (tmp_path / "heldout" / "prose.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in prose[:60]))
    raw = {"needles": {"toy": {"haystack": str(tmp_path / "heldout"), "lengths": [96, 160], "depths": [0, 1], "per_cell": 2}}}
    suite = Suite(name="needle_toy", tasks=["needle:toy"])
    result = runner.run_suite(hf, {}, suite, raw, tmp_path / "out", batch_size=4)
    task = json.loads((tmp_path / "out" / "needle_toy.json").read_text())["tasks"]["needle:toy"]
    assert task == result.data["tasks"]["needle:toy"] and result.data["sources"] == {"needle:toy": str(tmp_path / "heldout")}
    assert set(task) == {"acc", "n", "grid", "per_length", "examples", "lengths", "depths", "per_cell", "digits", "seed", "context"}
    assert task["n"] == 8 and set(task["grid"]) == {"96", "160"} and set(task["grid"]["96"]) == {"0.0", "1.0"}
    assert (task["context"], task["digits"], task["per_cell"]) == (128, 4, 2)
    answers = [json.loads(line) for line in (tmp_path / "out" / "needle_toy.answers.jsonl").read_text().splitlines()]
    assert len(answers) == 8 and {a["task"] for a in answers} == {"needle:toy"}
    raw["needles"]["toy"]["haystack"] = str(tmp_path / "none")
    with pytest.raises(UserError, match=r"^needles\.toy\.haystack: .*none does not exist"):
        runner.run_suite(hf, {}, suite, raw, tmp_path / "out")


# --- the report -----------------------------------------------------------------------------------


def needle_result(acc_by_length: dict[int, list[float]], context: int = 128) -> dict:
    """A needle:<name> task's results as tools/run_eval.py writes them (depths 0, 0.5, 1)."""
    grid = {str(n): dict(zip(("0.0", "0.5", "1.0"), row, strict=True)) for n, row in acc_by_length.items()}
    per_length = {n: sum(row.values()) / 3 for n, row in grid.items()}
    return {"acc": sum(per_length.values()) / len(per_length), "n": 12 * len(grid), "grid": grid, "per_length": per_length,
            "lengths": list(acc_by_length), "depths": [0.0, 0.5, 1.0], "per_cell": 4, "digits": 4, "seed": 0, "context": context,
            "examples": [{"length": 128, "depth": 0.5, "value": "4821", "generated": " 4821. The|x", "correct": True,
                          "prompt_tail": "…is"}]}


def write_run(run: Path) -> None:
    """Two pretraining stages of 4 steps, needle results at stage1 steps 2 and 4 and stage2 step 4."""
    for index, stage in enumerate(("stage1", "stage2")):
        local = run / stage / "local"
        local.mkdir(parents=True)
        (local / "log.jsonl").write_text("".join(json.dumps({"stage": stage, "kind": "pretrain", "step": s, "train_steps": 4,
                                                             "tokens": 1024 * s, "loss": 5.0 - s / 4}) + "\n" for s in (1, 2, 3, 4)))
        (local / "summary.json").write_text(json.dumps({"stage": stage, "kind": "pretrain", "index": index, "steps": 4, "tokens": 4096}))
    grids = {("stage1", 2): {128: [0.0, 0.0, 0.25], 256: [0.0, 0.0, 0.0]}, ("stage1", 4): {128: [0.5, 0.25, 0.75], 256: [0.0, 0.0, 0.25]},
             ("stage2", 4): {128: [1.0, 0.75, 1.0], 256: [0.75, 0.5, 1.0]}}
    for (stage, step), rows in grids.items():
        path = run / "eval" / stage / f"step-{step}" / "needle_tiny.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        model = {"stage": stage, "kind": "pretrain", "step": step, "tokens_seen": 1024 * step}
        path.write_text(json.dumps({"suite": "needle_tiny", "model": model, "tasks": {"needle:tiny": needle_result(rows)},
                                    "created": "2026-01-01T00:00:00"}))


def test_the_report_draws_a_heatmap_per_stage_and_tables_them(tmp_path):
    run = tmp_path / "runs" / "tiny"
    write_run(run)
    out = tmp_path / "out"
    report = write_report(run, out)
    assert out / "eval_needle.png" in report.eval_plots and (out / "eval_needle.png").read_bytes().startswith(PNG_SIGNATURE)
    assert (out / "eval_niah.png").read_bytes().startswith(PNG_SIGNATURE)  # the overall rate over the tokens, every checkpoint
    md = (out / "report.md").read_text()
    section = md[md.index("\n## Needle in a haystack\n"):]
    assert "![needle](eval_needle.png)" in section
    # each stage's last checkpoint: stage1 step 4, not step 2
    assert ("| task | model | checkpoint | accuracy | n | 128 tokens | 256 tokens |\n|---|---|---|---:|---:|---:|---:|\n"
            "| needle:tiny | base | stage1 step 4 | 0.29 [0.15, 0.49] | 24 | 0.50 | 0.08 |\n"
            "| needle:tiny | base | stage2 step 4 | 0.83 [0.64, 0.93] | 24 | 0.92 | 0.75 |\n") in section
    assert "| needle:tiny | stage2 step 4 | 128 | 0.5 | 4821 | ' 4821. The\\|x' | ✅ |" in section
    assert "tasks of no tier" not in md and "| needle:tiny | acc |" in md  # in the evaluation tables too


def test_the_heatmap_cells_are_the_grid(tmp_path):
    from smolrecipe.report.needles import read_needles
    from smolrecipe.runs import find_stages

    run = tmp_path / "run"
    write_run(run)
    results = read_needles(run, find_stages(run))
    assert [(r.stage, r.step) for r in results] == [("stage1", 4), ("stage2", 4)]
    assert [[results[1].cell(n, d) for n in results[1].lengths] for d in results[1].depths] == [[1.0, 0.75], [0.75, 0.5], [1.0, 1.0]]
    assert results[0].cell(512, "0.5") != results[0].cell(512, "0.5")  # NaN: no such cell
