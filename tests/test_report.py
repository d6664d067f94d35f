"""tools/report.py and smolrecipe.report.run_report on synthetic run folders: the curve, the PNG, the Markdown."""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from scipy.stats import binomtest

from smolrecipe.errors import UserError
from smolrecipe.recipe.loading import load_recipe
from smolrecipe.report.checks import loss_window
from smolrecipe.report.curves import loss_curves
from smolrecipe.report.evals import MC_CHANCE, TIERS, Comparison, EvalPoint, read_evals
from smolrecipe.report.mixture import domain_shares
from smolrecipe.report.numbers import wilson
from smolrecipe.report.run_report import ReportInputs, eval_figure, human_tokens, learning_checks, md_cell, stage_spans, write_report
from smolrecipe.runs import find_stages, read_log

ROOT = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def load_cli():
    """tools/report.py as a module (`import report` would be ambiguous with tools/ on sys.path)."""
    spec = importlib.util.spec_from_file_location("report_cli", ROOT / "tools" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def record(stage: str, kind: str, step: int, train_steps: int, tokens: int, loss: float, **extra) -> str:
    return json.dumps({"stage": stage, "kind": kind, "step": step, "train_steps": train_steps, "tokens": tokens,
                       "loss": loss, "lr": 1e-3, "grad_norm": 1.0, "tokens_per_s": 1000.0, "elapsed_s": step * 0.5,
                       **extra})


def write_stage(run: Path, folder: str, lines: list[str], summary: dict | None = None, tail: str = "") -> None:
    local = run / folder / "local"
    local.mkdir(parents=True)
    (local / "log.jsonl").write_text("".join(line + "\n" for line in lines) + tail)
    if summary is not None:
        (local / "summary.json").write_text(json.dumps(summary))


SAMPLES = {
    "prompts": ["What is 2|3?\nAnswer briefly.", "Name a colour.", "Count to three."],
    "models": {
        "base": {"checkpoint": "runs/tiny/stage2/local/checkpoint-4", "answers": ["2|3 is 2|3 is", "blue blue", "x" * 500],
                 "ends_with_eot": [False, False, True]},
        "sft": {"checkpoint": "runs/tiny/sft/local/checkpoint-2", "answers": ["It is 5.\nDone.", "Red.", "1, 2, 3."],
                "ends_with_eot": [True, True, False]},
    },
}


@pytest.fixture
def run(tmp_path) -> Path:
    """runs/tiny with two finished pretraining stages and an unfinished SFT stage.

    stage1: 4 steps x 1,024 tokens, losses 10, 8, 6, 5.
    stage2: 4 steps x 2,048 tokens; killed after logging step 3 (loss 4.9) and resumed, which redid
            step 3 (loss 4.7); extra keys on a line.
    sft:    no summary.json (still running); a last line cut off mid-write. Its folder name sorts
            before 'stage1', so ordering must come from the summaries, not the names.
    """
    run = tmp_path / "runs" / "tiny"
    write_stage(run, "stage1", [record("stage1", "pretrain", s, 4, 1024 * s, loss) for s, loss in
                                zip((1, 2, 3, 4), (10.0, 8.0, 6.0, 5.0), strict=True)],
                {"stage": "stage1", "kind": "pretrain", "index": 0, "train_steps": 4, "steps": 4, "tokens": 4096,
                 "first_loss": 10.0, "final_loss": 5.0, "seconds": 2.0, "tokens_per_s": 2048.0,
                 "checkpoint": "runs/tiny/stage1/local/checkpoint-4", "recipe_hash": "ab12cd34", "device": "cpu"})
    write_stage(run, "stage2", [record("stage2", "pretrain", 1, 4, 2048, 5.5), record("stage2", "pretrain", 2, 4, 4096, 5.2),
                                record("stage2", "pretrain", 3, 4, 6144, 4.9),
                                record("stage2", "pretrain", 3, 4, 6144, 4.7, resumed=True),
                                record("stage2", "pretrain", 4, 4, 8192, 4.5)],
                {"stage": "stage2", "kind": "pretrain", "index": 1, "train_steps": 4, "steps": 4, "tokens": 8192,
                 "first_loss": 5.5, "final_loss": 4.5, "seconds": 4.0, "tokens_per_s": 2048.0,
                 "checkpoint": "runs/tiny/stage2/local/checkpoint-4", "recipe_hash": "ab12cd34", "device": "cpu"})
    write_stage(run, "sft", [record("sft", "sft", 1, 8, 512, 3.0), record("sft", "sft", 2, 8, 1024, 2.5)],
                tail='{"stage": "sft", "kind": "sft", "step": 3, "train_st')
    return run


def test_log_keeps_the_last_of_a_redone_step_and_skips_a_cut_off_line(run):
    records, skipped = read_log(run / "stage2" / "local" / "log.jsonl")
    assert [(r["step"], r["loss"]) for r in records] == [(1, 5.5), (2, 5.2), (3, 4.7), (4, 4.5)]
    records, skipped = read_log(run / "sft" / "local" / "log.jsonl")
    assert [r["step"] for r in records] == [1, 2] and skipped == 1


def test_stages_in_summary_order_then_unfinished(run, tmp_path):
    stages = find_stages(run)
    assert [(s.name, s.finished, s.tokens) for s in stages] == [("stage1", True, 4096), ("stage2", True, 8192), ("sft", False, 1024)]
    # the summary's index wins over the folder name
    other = tmp_path / "other"
    write_stage(other, "a_late", [record("a_late", "pretrain", 1, 1, 10, 2.0)], {"stage": "a_late", "index": 1, "tokens": 10})
    write_stage(other, "b_early", [record("b_early", "pretrain", 1, 1, 10, 3.0)], {"stage": "b_early", "index": 0, "tokens": 10})
    assert [s.name for s in find_stages(other)] == ["b_early", "a_late"]


def test_curves_continue_where_the_previous_stage_ended(run):
    curves = loss_curves(find_stages(run))
    assert [c.stage for c in curves] == ["stage1", "stage2", "sft"]
    assert [c.start for c in curves] == [0, 4096, 4096 + 8192]
    assert curves[0].tokens == [1024, 2048, 3072, 4096]
    assert curves[1].tokens == [4096 + 2048, 4096 + 4096, 4096 + 6144, 4096 + 8192]
    assert curves[1].loss == [5.5, 5.2, 4.7, 4.5]
    assert curves[2].tokens == [12288 + 512, 12288 + 1024]
    assert curves[2].label == "sft (unfinished)"


def test_human_tokens():
    assert [human_tokens(n) for n in (0, 512, 32_000, 32_768, 1_200_000, 999_999, 3e9)] == \
        ["0", "512", "32K", "32.8K", "1.2M", "1M", "3B"]


def test_md_cell_escapes_and_shortens():
    assert md_cell("a|b\nc") == "a\\|b<br>c"
    long = md_cell("y" * 500)
    assert len(long) == 200 and long.endswith("…")


def test_later_chat_stages_answer_beside_base_and_sft(run):
    """tools/sample.py adds the preference model's answers under its stage name: a column of its own."""
    samples = json.loads(json.dumps(SAMPLES))
    samples["models"]["preference"] = {**samples["models"]["sft"], "answers": ["5.", "Green.", "1, 2, 3."],
                                       "ends_with_eot": [True, True, True]}
    (run / "samples.json").write_text(json.dumps(samples))
    write_report(run)
    md = (run / "report.md").read_text()
    assert "## Base vs SFT vs preference" in md and "| prompt | base answer | SFT answer | preference answer |" in md
    assert "| Count to three. | " + "x" * 199 + "… | 1, 2, 3. | 1, 2, 3. |" in md
    assert "base 1 of 3, SFT 2 of 3, preference 3 of 3 answers." in md


def test_report_files(run):
    (run / "samples.json").write_text(json.dumps(SAMPLES))
    report = write_report(run)
    png = (run / "loss.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 10_000
    md = (run / "report.md").read_text()
    assert md.startswith("# tiny — training report\n")
    assert "![loss](loss.png)" in md
    assert "| stage1 | pretrain | 4 | 4,096 | 10.00 | 5.00 | 2,048 | 2.0 | runs/tiny/stage1/local/checkpoint-4 |" in md
    assert "| stage2 | pretrain | 4 | 8,192 | 5.50 | 4.50 | 2,048 | 4.0 | runs/tiny/stage2/local/checkpoint-4 |" in md
    # unfinished: numbers from the last complete logged step
    assert "| sft (unfinished) | sft | 2 / 8 | 1,024 | 3.00 | 2.50 | 1,000 | 1.0 | — |" in md
    # total: 4,096 + 8,192 + 1,024 tokens over 2 + 4 + 1 s
    assert "| **total** |  | **10** | **13,312** | **10.00** | **2.50** | **1,902** | **7.0** |  |" in md
    assert "sft: skipped 1 unreadable log line(s)" in md
    # base vs SFT, with escaped and shortened cells
    assert "| prompt | base answer | SFT answer |" in md
    assert "| What is 2\\|3?<br>Answer briefly. | 2\\|3 is 2\\|3 is | It is 5.<br>Done. |" in md
    assert "| Count to three. | " + "x" * 199 + "… | 1, 2, 3. |" in md
    assert "Ended with the end-of-turn token: base 1 of 3, SFT 2 of 3 answers." in md
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    assert report.summary == (f"report: 3 stages, 13,312 tokens, loss 10.00 -> 2.50 (stage1 first -> sft final); "
                              f"checks 3/3 met; wrote {run / 'report.md'}, {run / 'loss.png'}")


def test_no_samples_no_section(run, tmp_path):
    write_report(run, tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Stages" in md and "Base vs SFT" not in md
    assert not (run / "report.md").exists()


def test_no_logs_is_one_line_error_and_writes_nothing(tmp_path, capsys):
    empty = tmp_path / "runs" / "empty"
    (empty / "stage1" / "local").mkdir(parents=True)
    with pytest.raises(UserError, match="train_local.py"):
        write_report(empty)
    assert load_cli().main([str(empty), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(empty) in err and "tools/train_local.py" in err
    assert [p for p in empty.rglob("*") if p.is_file()] == [] and not (tmp_path / "out").exists()


def test_cli_prints_the_summary_line(run, capsys):
    assert load_cli().main([str(run)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == (f"report: 3 stages, 13,312 tokens, loss 10.00 -> 2.50 (stage1 first -> sft final); "
                       f"checks 2/2 met; wrote {run / 'report.md'}, {run / 'loss.png'}")


@pytest.mark.slow
def test_cli_runs_as_a_script(run):
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "report.py"), "tiny"], cwd=run.parent,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1].endswith("wrote tiny/report.md, tiny/loss.png")
    assert (run / "loss.png").read_bytes().startswith(PNG_SIGNATURE)


def test_a_broken_summary_is_a_one_line_error_naming_it(run):
    (run / "stage2" / "local" / "summary.json").write_text('{"stage": "sta')
    with pytest.raises(UserError, match="summary.json: not valid JSON"):
        write_report(run)
    assert not (run / "report.md").exists() and not (run / "loss.png").exists()


def test_checks_flag_a_stage_that_did_not_learn(run):
    log = run / "stage2" / "local" / "log.jsonl"
    log.write_text(log.read_text() + record("stage2", "pretrain", 4, 4, 8192, 6.0, resumed=True) + "\n")  # above 5.5
    (run / "samples.json").write_text(json.dumps(SAMPLES))
    report = write_report(run)
    md = (run / "report.md").read_text()
    # 4 logged steps: windows of 1
    assert "- ✅ stage1: mean loss of the last 1 logged step(s) 5.00 below that of the first 1 10.00" in md
    assert "- ❌ stage2: mean loss of the last 1 logged step(s) 6.00 below that of the first 1 5.50" in md
    assert "- ✅ SFT ends 2 of 3 answers with the end-of-turn token (base: 1 of 3)" in md
    assert "sft: mean loss" not in md  # unfinished stages are not judged
    assert "checks 2/3 met" in report.summary


@pytest.mark.parametrize(("base", "sft", "line", "met"), [
    ([True] * 3, [True] * 3, "SFT ends 3 of 3 answers (all) with the end-of-turn token (base: 3 of 3)", True),
    ([True] * 3, [True, True, False], "SFT ends 2 of 3 answers with the end-of-turn token (base: 3 of 3)", False),
    ([False] * 3, [False] * 3, "SFT ends 0 of 3 answers with the end-of-turn token (base: 0 of 3)", False),
])
def test_end_of_turn_check_is_met_by_more_than_base_or_by_every_answer(run, base, sft, line, met):
    """A base model that read chats in pretraining may end every answer already (the tiny recipe's
    does): an SFT model that keeps that meets the check, one that loses an answer does not."""
    samples = copy.deepcopy(SAMPLES)
    samples["models"]["base"]["ends_with_eot"], samples["models"]["sft"]["ends_with_eot"] = base, sft
    checks = dict(learning_checks(ReportInputs(name="tiny", stages=find_stages(run), samples=samples)))
    assert checks[line] is met


def test_loss_check_compares_smoothed_windows_not_single_steps(tmp_path):
    """30 logged steps: windows of 3. The last step (3.9) is below the first (4.0), but the stage
    ends higher on average than it began: the check fails and says so with both means."""
    losses = [4.0, 4.0, 4.0] + [4.5] * 24 + [5.0, 5.0, 3.9]
    run = tmp_path / "runs" / "noisy"
    write_stage(run, "stage1", [record("stage1", "pretrain", i + 1, 30, 100 * (i + 1), x) for i, x in enumerate(losses)],
                {"stage": "stage1", "kind": "pretrain", "index": 0, "tokens": 3000, "first_loss": 4.0, "final_loss": 3.9})
    assert learning_checks(ReportInputs(name="noisy", stages=find_stages(run))) == \
        [("stage1: mean loss of the last 3 logged step(s) 4.63 below that of the first 3 4.00", False)]
    assert [loss_window(n) for n in (1, 9, 10, 30, 199, 200, 5000)] == [1, 1, 1, 3, 19, 20, 20]
    # a finished stage with a single logged step has nothing to compare: left out, not passed
    write_stage(run, "stage2", [record("stage2", "pretrain", 1, 1, 100, 2.0)], {"stage": "stage2", "index": 1, "tokens": 100})
    assert [what.split(":")[0] for what, _ in learning_checks(ReportInputs(name="noisy", stages=find_stages(run)))] == ["stage1"]


# ---- evaluation results --------------------------------------------------------------------------


def ppl(bpb: float, n: int = 17) -> dict:
    return {"bits_per_byte": bpb, "token_ppl": 2 ** (bpb * 4), "tokens": 4096, "bytes": 16384, "n": n}


def mc(acc_norm: float, n: int = 24) -> dict:
    return {"acc": acc_norm - 0.05, "acc_stderr": 0.1, "acc_norm": acc_norm, "acc_norm_stderr": 0.1, "n": n}


def write_eval(run: Path, stage: str, step: int, suite: str, tasks: dict, tokens_seen: int | None,
               created: str = "2026-01-01T00:00:00") -> Path:
    """One results file as tools/run_eval.py writes it."""
    path = run / "eval" / stage / f"step-{step}" / f"{suite}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    kind = stage if stage in ("sft", "preference") else "pretrain"
    path.write_text(json.dumps({
        "suite": suite, "checkpoint": f"runs/tiny/{stage}/local/checkpoint-{step}",
        "model": {"recipe": "tiny", "stage": stage, "stage_index": 0, "kind": kind,
                  "step": step, "tokens_seen": tokens_seen, "recipe_hash": "ab12cd34", "backend": "local"},
        "chat_prompts": kind != "pretrain", "limit": 24, "items": 10, "seconds": 1.0, "items_per_s": 10.0, "tasks": tasks,
        "sources": {}, "lighteval_version": "0.13.0", "created": created}))
    return path


@pytest.fixture
def evals(run) -> Path:
    """The `run` fixture with results at stage1 step 2, stage2's end and sft step 2 (tiers 2, 3, 4; no GSM8K).

    On the loss axis stage1 starts at 0, stage2 at 4,096 and sft at 4,096 + 8,192 = 12,288.
    """
    write_eval(run, "stage1", 2, "quick", {"ppl:web": ppl(4.0), "mc:piqa": mc(0.30)}, tokens_seen=2048)
    write_eval(run, "stage2", 4, "quick", {"ppl:web": ppl(3.0), "ppl:code": ppl(3.5, n=28), "mc:piqa": mc(0.50)}, tokens_seen=8192)
    write_eval(run, "sft", 2, "quick", {"ppl:web": ppl(2.5), "mc:piqa": mc(0.40), "sft_suite": {
        "instruction_match": 0.25, "instruction_match_stderr": 0.1, "all_checks_pass": 0.125, "format_valid": 0.5,
        "code_parse": float("nan"), "code_parse_stderr": float("nan"), "clean_end": 0.75, "n": 8}}, tokens_seen=1024)
    return run


def points_of(run: Path, **match):
    stages = find_stages(run)
    results = read_evals(run, stages, loss_curves(stages))
    return results, [p for p in results.points if all(getattr(p, k) == v for k, v in match.items())]


def test_eval_points_sit_on_the_loss_axis_in_training_order(evals):
    results, web = points_of(evals, task="ppl:web", metric="bits_per_byte")
    assert [(p.stage, p.step, p.tokens, p.value, p.n) for p in web] == \
        [("stage1", 2, 2048, 4.0, 17), ("stage2", 4, 4096 + 8192, 3.0, 17), ("sft", 2, 12288 + 1024, 2.5, 17)]
    assert results.files == 3 and not results.skipped and not results.warnings
    _, suite = points_of(evals, task="sft_suite")
    assert {p.metric for p in suite} == {"instruction_match", "all_checks_pass", "format_valid", "clean_end"}  # NaN: no point


def test_eval_checkpoint_without_tokens_is_placed_at_its_stage_end_or_left_out(evals):
    write_eval(evals, "stage2", 4, "quick", {"ppl:web": ppl(3.0)}, tokens_seen=None)  # the stage's last step
    write_eval(evals, "stage2", 2, "quick", {"ppl:web": ppl(3.2)}, tokens_seen=None)
    write_eval(evals, "stage9", 1, "quick", {"ppl:web": ppl(3.2)}, tokens_seen=10)
    results, web = points_of(evals, task="ppl:web")
    assert [(p.stage, p.step, p.tokens) for p in web if p.metric == "bits_per_byte"] == \
        [("stage1", 2, 2048), ("stage2", 4, 12288), ("sft", 2, 13312)]
    assert results.warnings == ["eval/stage2/step-2: left out, no tokens_seen and not the stage's last step",
                                "eval/stage9/step-1: left out, not a stage of this run"]


def test_a_task_in_several_suites_counts_once_with_more_items_then_newer(evals):
    write_eval(evals, "stage2", 4, "tier3", {"mc:piqa": mc(0.60, n=100)}, tokens_seen=8192, created="2025-01-01T00:00:00")
    write_eval(evals, "sft", 2, "tier3", {"mc:piqa": mc(0.45, n=24)}, tokens_seen=1024, created="2026-06-01T00:00:00")
    _, piqa = points_of(evals, task="mc:piqa", metric="acc_norm")
    assert [(p.stage, p.value, p.n) for p in piqa] == [("stage1", 0.30, 24), ("stage2", 0.60, 100), ("sft", 0.45, 24)]


def test_unreadable_eval_files_are_skipped_and_counted(evals, tmp_path):
    folder = evals / "eval" / "sft" / "step-2"
    (folder / "cut.json").write_text('{"suite": "quick", "mod')
    (folder / "list.json").write_text("[1, 2]")
    (folder / "nomodel.json").write_text('{"tasks": {}}')
    report = write_report(evals, tmp_path / "out")
    assert report.evals.files == 3 and [p.name for p in report.evals.skipped] == ["cut.json", "list.json", "nomodel.json"]
    assert "3 eval result(s) read, 3 unreadable skipped; " in report.summary
    assert f"- skipped an unreadable results file: {folder / 'cut.json'}" in (tmp_path / "out" / "report.md").read_text()


def test_a_plot_per_tier_with_results(evals, tmp_path):
    out = tmp_path / "out"
    report = write_report(evals, out)
    for name in ("eval_tier2.png", "eval_tier3.png", "eval_tier4.png"):
        assert (out / name).read_bytes().startswith(PNG_SIGNATURE)
    assert not (out / "eval_gsm8k.png").exists()
    assert report.eval_plots == [out / "eval_tier2.png", out / "eval_tier3.png", out / "eval_tier4.png"]
    assert report.summary.endswith(f"wrote {out / 'report.md'}, {out / 'loss.png'}, {out / 'eval_tier2.png'}, "
                                   f"{out / 'eval_tier3.png'}, {out / 'eval_tier4.png'}")
    # one checkpoint, one point per line, GSM8K only: still a plot
    gsm = tmp_path / "gsm"
    write_stage(gsm, "stage1", [record("stage1", "pretrain", 1, 1, 100, 2.0)], {"stage": "stage1", "index": 0, "tokens": 100})
    write_eval(gsm, "stage1", 1, "gsm8k", {"gsm8k": {"exact_match": 0.02, "exact_match_stderr": 0.01, "n": 100}}, tokens_seen=100)
    assert [p.name for p in write_report(gsm).eval_plots] == ["eval_gsm8k.png"]
    assert (gsm / "eval_gsm8k.png").read_bytes().startswith(PNG_SIGNATURE)


def test_evaluation_tables(evals):
    write_report(evals)
    md = (evals / "report.md").read_text()
    assert md.index("## Checks") < md.index("## Evaluation") < md.index("## Base vs SFT: evaluation")
    assert "3 result file(s) of tools/run_eval.py" in md
    assert "![tier2](eval_tier2.png)" in md and "![tier4](eval_tier4.png)" in md and "eval_gsm8k" not in md
    assert "| task | metric | stage1 step 2 | stage2 step 4 | sft step 2 |\n|---|---|---:|---:|---:|" in md
    assert "| ppl:code | bits_per_byte | — | 3.500 (n=28) | — |" in md
    assert "| ppl:web | bits_per_byte | 4.000 (n=17) | 3.000 (n=17) | 2.500 (n=17) |" in md
    # rates: the Wilson 95% interval (PIQA: 7, 12 and 10 of 24 items)
    assert "| mc:piqa | acc_norm | 0.30 [0.15, 0.49] (n=24) | 0.50 [0.31, 0.69] (n=24) | 0.40 [0.24, 0.61] (n=24) |" in md
    assert "| task | metric | sft step 2 |" in md  # tier 4: only the SFT checkpoint ran it
    assert "| sft_suite | instruction_match | 0.25 [0.07, 0.59] (n=8) |\n| sft_suite | all_checks_pass | 0.12 [0.02, 0.47] (n=8) |" in md
    # over the prompts with a format check, whose number the results do not give: no n, no interval
    assert "| sft_suite | format_valid | 0.500 |" in md
    assert "code_parse" not in md  # NaN everywhere: no row


def test_eval_base_vs_sft(evals):
    write_report(evals)
    md = (evals / "report.md").read_text()
    section = md[md.index("## Base vs SFT: evaluation"):]
    assert "Base: stage2 step 4 (the last evaluated pretraining checkpoint); SFT: sft step 2." in section
    assert "| task | metric | base | SFT | SFT − base | better when | SFT is |" in section
    assert "| ppl:web | bits_per_byte | 3.000 (n=17) | 2.500 (n=17) | -0.500 | lower | better |" in section
    assert "| ppl:web | token_ppl | 4,096.0 (n=17) | 1,024.0 (n=17) | -3,072.0 | lower | better |" in section
    # 12 vs 10 of 24 PIQA items: the intervals overlap
    assert "| mc:piqa | acc_norm | 0.50 [0.31, 0.69] (n=24) | 0.40 [0.24, 0.61] (n=24) | -0.100 | higher | no clear difference |" in section
    assert "| ppl:code | bits_per_byte | 3.500 (n=28) | — | — | lower | — |" in section
    assert "| sft_suite | clean_end | — | 0.75 [0.41, 0.93] (n=8) | — | higher | — |" in section
    assert "when the two Wilson 95% intervals do not overlap" in section and "by more than 2% of base" in section


def test_no_eval_folder_no_eval_output(run, tmp_path):
    (run / "eval" / "stage1").mkdir(parents=True)  # an empty eval folder is the same as none
    report = write_report(run, tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Evaluation" not in md and report.eval_plots == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["loss.png", "report.md"]
    assert "eval result" not in report.summary


@pytest.mark.parametrize("base_clean, met", [(0.25, True), (0.75, False)])
def test_checks_compare_clean_ends_of_the_evaluated_sft_suite(evals, base_clean, met):
    suite = {"instruction_match": 0.0, "all_checks_pass": 0.0, "format_valid": 0.0, "clean_end": base_clean, "n": 8}
    write_eval(evals, "stage2", 4, "tier4", {"sft_suite": suite}, tokens_seen=8192)
    stages = find_stages(evals)
    checks = learning_checks(ReportInputs(name="tiny", stages=stages, evals=read_evals(evals, stages, loss_curves(stages))))
    clean = [ok for what, ok in checks if "SFT-suite answers cleanly" in what]
    assert clean == [met]  # SFT ends 75% cleanly; a base model that ends as often has not been outdone


# ---- where points sit, their noise, and the checks that read them (issue 21) ---------------------


def series(ax) -> dict[str, list]:
    """label -> the x values of each plotted series (rates are error-bar containers, others lines)."""
    out = {c.get_label(): list(c.lines[0].get_xdata()) for c in ax.containers}
    return out | {line.get_label(): list(line.get_xdata()) for line in ax.get_lines() if not line.get_label().startswith("_")}


def test_a_final_checkpoint_sits_at_its_stage_end_inside_its_own_labelled_span(evals):
    # stage1's final checkpoint; its provenance counts a little less than the stage's logged total
    write_eval(evals, "stage1", 4, "quick", {"mc:piqa": mc(0.40)}, tokens_seen=4000)
    stages = find_stages(evals)
    curves = loss_curves(stages)
    results = read_evals(evals, stages, curves)
    final = next(p for p in results.points if (p.stage, p.step, p.metric) == ("stage1", 4, "acc_norm"))
    assert final.tokens == curves[0].end == 4096 == curves[1].start  # the cumulative tokens at stage1's end
    spans = {stage: (start, end) for stage, start, end in stage_spans(curves)}
    assert spans == {"stage1": (0, 4096), "stage2": (4096, 12288), "sft": (12288, 13312)}
    assert spans["stage1"][0] < final.tokens <= spans["stage1"][1]
    assert not spans["stage2"][0] < final.tokens <= spans["stage2"][1]
    tier3 = next(t for t in TIERS if t.key == "tier3")
    ax = eval_figure(results.tier_points(tier3), tier3, curves, 13312, "tiny").axes[0]
    # each stage's name is centred over its own span, not written just right of its start line
    assert {t.get_text(): t.get_position()[0] for t in ax.texts} == {"stage1": 2048, "stage2": 8192, "sft": 12800}
    assert series(ax)["mc:piqa"] == [2048, 4096, 12288, 13312]


def test_coinciding_series_stay_distinct_and_chance_is_dotted(evals):
    write_eval(evals, "stage2", 4, "tier3", {"mc:piqa": mc(0.50), "mc:copa": mc(0.50), "mc:arc_easy": mc(0.50)}, tokens_seen=8192)
    stages = find_stages(evals)
    curves = loss_curves(stages)
    tier3 = next(t for t in TIERS if t.key == "tier3")
    ax = eval_figure(read_evals(evals, stages, curves).tier_points(tier3), tier3, curves, 13312, "tiny").axes[0]
    styles = {c.get_label(): (c.lines[0].get_marker(), c.lines[0].get_linestyle()) for c in ax.containers}
    assert set(styles) == {"mc:piqa", "mc:copa", "mc:arc_easy"} and len(set(styles.values())) == 3
    dotted = sorted(line.get_ydata()[0] for line in ax.get_lines() if line.get_linestyle() == ":")
    assert dotted == [0.25, 0.5, 0.5]  # arc_easy; piqa and copa, each in its series' colour
    suites = yaml.safe_load((ROOT / "eval" / "suites.yaml").read_text())["suites"]
    benchmarks = {task.removeprefix("mc:") for suite in suites.values() for task in suite["tasks"] if task.startswith("mc:")}
    assert benchmarks and benchmarks <= set(MC_CHANCE)  # every multiple-choice task has its chance level


def test_rates_carry_scipy_wilson_intervals_and_chance_levels(evals):
    _, piqa = points_of(evals, task="mc:piqa", metric="acc_norm")
    ci = binomtest(12, 24).proportion_ci(method="wilson")  # stage2: 12 of 24
    assert piqa[1].ci == pytest.approx((ci.low, ci.high)) and {p.chance for p in piqa} == {0.5}
    _, web = points_of(evals, task="ppl:web")
    assert all(p.ci is None and p.chance is None for p in web)  # not a rate
    _, valid = points_of(evals, task="sft_suite", metric="format_valid")
    assert (valid[0].n, valid[0].ci) == (None, None)  # over a subset of unknown size


def point(metric: str, value: float, n: int, stage: str) -> EvalPoint:
    rate = metric not in ("bits_per_byte", "token_ppl")
    return EvalPoint("tier3" if rate else "tier2", "t", metric, stage, 1, 0, value, n, ci=wilson(value, n) if rate else None)


@pytest.mark.parametrize("metric, base, sft, n, verdict", [
    ("acc_norm", 0.50, 0.40, 24, "no clear difference"),  # the demo's PIQA: 12 vs 10 of 24
    ("acc_norm", 0.50, 0.80, 500, "better"),
    ("acc_norm", 0.80, 0.50, 500, "worse"),
    ("bits_per_byte", 3.00, 2.95, 17, "no clear difference"),  # 1.7%: within the 2% margin
    ("bits_per_byte", 3.00, 2.50, 17, "better"),
    ("token_ppl", 100.0, 110.0, 17, "worse"),
])
def test_base_vs_sft_verdict_only_outside_the_noise(metric, base, sft, n, verdict):
    assert Comparison("t", metric, point(metric, base, n, "stage2"), point(metric, sft, n, "sft")).verdict == verdict


def test_a_large_rate_difference_is_called_in_the_table(evals):
    write_eval(evals, "stage2", 4, "tier3", {"mc:piqa": mc(0.50, n=500)}, tokens_seen=8192)
    write_eval(evals, "sft", 2, "tier3", {"mc:piqa": mc(0.80, n=500)}, tokens_seen=1024)
    write_report(evals)
    md = (evals / "report.md").read_text()
    assert "| mc:piqa | acc_norm | 0.50 [0.46, 0.54] (n=500) | 0.80 [0.76, 0.83] (n=500) | +0.300 | higher | better |" in md


def world(em_fact: float, em_arithmetic: float, mc_fact: float = 0.6, n_fact: int = 60, n_arithmetic: int = 40) -> dict:
    """qa:world's metrics as its results file holds them: per-category counts, and the multiple-choice
    rates over the items that have choices (50 of the facts, 30 of the sums)."""
    return {"em": (em_fact * n_fact + em_arithmetic * n_arithmetic) / (n_fact + n_arithmetic), "em_fact": em_fact,
            "em_arithmetic": em_arithmetic, "pass_format": 0.5, "mc_fact": mc_fact, "mc_arithmetic": 0.3, "mc_norm_fact": mc_fact,
            "chance_fact": 0.25, "chance_arithmetic": 0.2, "n": n_fact + n_arithmetic + 100, "n_fact": n_fact,
            "n_arithmetic": n_arithmetic, "n_format": 100, "n_mc_fact": 50, "n_mc_arithmetic": 30}


def checks_of(run: Path, shares=None) -> list[tuple[str, bool]]:
    stages = find_stages(run)
    return learning_checks(ReportInputs(name="tiny", stages=stages, evals=read_evals(run, stages, loss_curves(stages)), shares=shares))


def test_world_knowledge_plot_table_and_checks(evals, tmp_path):
    write_eval(evals, "stage2", 4, "world", {"qa:world": world(0.10, 0.05)}, tokens_seen=8192)
    write_eval(evals, "sft", 2, "world", {"qa:world": world(0.50, 0.50)}, tokens_seen=1024)
    out = tmp_path / "out"
    report = write_report(evals, out)
    assert out / "eval_world.png" in report.eval_plots and (out / "eval_world.png").read_bytes().startswith(PNG_SIGNATURE)
    md = (out / "report.md").read_text()
    assert "![world](eval_world.png)" in md
    assert "| qa:world | em_fact | 0.10 [0.05, 0.20] (n=60) | 0.50 [0.38, 0.62] (n=60) |" in md
    assert "| qa:world | em_arithmetic | 0.05 [0.01, 0.17] (n=40) | 0.50 [0.35, 0.65] (n=40) |" in md
    assert "| qa:world | pass_format | 0.50 [0.40, 0.60] (n=100) | 0.50 [0.40, 0.60] (n=100) |" in md
    assert ("- ✅ SFT beats base on the world-knowledge suite (each SFT interval above base's): em_fact 0.50 [0.38, 0.62] (n=60) "
            "vs base 0.10 [0.05, 0.20] (n=60); em_arithmetic 0.50 [0.35, 0.65] (n=40) vs base 0.05 [0.01, 0.17] (n=40)") in md
    assert "| qa:world | mc_fact | 0.60 [0.46, 0.72] (n=50) | 0.60 [0.46, 0.72] (n=50) |" in md  # n_mc_fact
    assert ("- ✅ base model knows the facts better than chance: mc_fact at stage2 step 4 0.60 [0.46, 0.72] (n=50), "
            "lower bound 0.46 above chance 0.25") in md
    _, mcs = points_of(evals, task="qa:world", metric="mc_arithmetic")
    assert {p.chance for p in mcs} == {0.2}  # the results' own chance level


def test_world_checks_fail_inside_the_noise(evals):
    # arithmetic 6 vs 2 of 40: the intervals overlap; facts 17 of 50 by likelihood: lower bound 0.22 < chance 0.25
    write_eval(evals, "stage2", 4, "world", {"qa:world": world(0.10, 0.05, mc_fact=0.34)}, tokens_seen=8192)
    write_eval(evals, "sft", 2, "world", {"qa:world": world(0.50, 0.15)}, tokens_seen=1024)
    checks = dict(checks_of(evals))
    beats = next(what for what in checks if what.startswith("SFT beats base"))
    assert checks[beats] is False and "em_arithmetic 0.15 [0.07, 0.29] (n=40) vs base 0.05 [0.01, 0.17] (n=40)" in beats
    assert checks["base model knows the facts better than chance: mc_fact at stage2 step 4 0.34 [0.22, 0.48] (n=50), "
                  "lower bound 0.22 above chance 0.25"] is False


def test_checks_without_their_inputs_are_left_out(evals):
    whats = [what for what, _ in checks_of(evals)]  # no qa:world results at all
    assert not [w for w in whats if "world-knowledge" in w or "better than chance" in w or "domain it upweights" in w]
    write_eval(evals, "sft", 2, "world", {"qa:world": world(0.50, 0.50)}, tokens_seen=1024)  # SFT only
    assert not [w for w, _ in checks_of(evals) if "world-knowledge" in w or "better than chance" in w]
    for path in (evals / "eval" / "sft").rglob("*.json"):  # no SFT results: nothing to keep perplexity against
        path.unlink()
    assert not [w for w, _ in checks_of(evals) if "SFT keeps" in w]


@pytest.mark.parametrize("sft_web, met", [(2.5, True), (3.6, False)])
def test_sft_keeps_held_out_perplexity(evals, sft_web, met):
    write_eval(evals, "sft", 2, "quick", {"ppl:web": ppl(sft_web)}, tokens_seen=1024)
    kept = [(what, ok) for what, ok in checks_of(evals) if what.startswith("SFT keeps")]
    change = f"{(sft_web - 3.0) / 3.0:+.1%}"
    assert kept == [(f"SFT keeps held-out perplexity within 15% of base (bits per byte, SFT vs base): "
                     f"ppl:web {sft_web:.3f} vs 3.000 ({change})", met)]  # ppl:code: base only, not compared


@pytest.fixture
def mixture_recipe(run, tiny_dict, write_recipe) -> Path:
    """A recipe whose stage2 raises math and code from 0 to 25% each (a tie: both checked), recorded by the run."""
    first = {}
    for name, source in tiny_dict["sources"].items():
        first.setdefault(source["domain"], name)
    stages = {s["name"]: s for s in tiny_dict["stages"]}
    stages["stage1"]["mixture"] = {"web": {"share": 1.0, "sources": {first["web"]: 1.0}}}
    stages["stage2"]["mixture"] = {d: {"share": x, "sources": {first[d]: 1.0}} for d, x in (("web", 0.5), ("math", 0.25), ("code", 0.25))}
    stages["stage2"].pop("replay", None)
    path = write_recipe(tiny_dict)
    recipe_hash = load_recipe(path).hash()
    for stage in ("stage1", "stage2"):
        summary = run / stage / "local" / "summary.json"
        summary.write_text(json.dumps(json.loads(summary.read_text()) | {"recipe_hash": recipe_hash}))
    return path


def test_a_stage_lowers_held_out_loss_on_the_domain_it_upweights(run, mixture_recipe, tmp_path):
    shares, note = domain_shares(mixture_recipe, find_stages(run))
    assert note is None and shares == {"stage1": {"web": 1.0}, "stage2": {"web": 0.5, "math": 0.25, "code": 0.25}}
    write_eval(run, "stage1", 4, "quick", {"ppl:math": ppl(4.0), "ppl:code": ppl(3.0)}, tokens_seen=4096)
    write_eval(run, "stage2", 4, "quick", {"ppl:math": ppl(3.2), "ppl:code": ppl(3.1)}, tokens_seen=8192)
    write_report(run, tmp_path / "out", recipe=mixture_recipe)
    md = (tmp_path / "out" / "report.md").read_text()
    assert ("- ❌ stage2 lowers held-out loss on the domain it upweights (code: 0% -> 25% of its tokens): "
            "ppl:code 3.100 bits/byte at stage2 step 4, below 3.000 at stage1 step 4") in md
    assert ("- ✅ stage2 lowers held-out loss on the domain it upweights (math: 0% -> 25% of its tokens): "
            "ppl:math 3.200 bits/byte at stage2 step 4, below 4.000 at stage1 step 4") in md


def test_a_recipe_the_run_was_not_trained_with_gives_no_mixture_checks(run, mixture_recipe, tmp_path):
    summary = run / "stage2" / "local" / "summary.json"
    summary.write_text(json.dumps(json.loads(summary.read_text()) | {"recipe_hash": "0123456789abcdef"}))
    shares, note = domain_shares(mixture_recipe, find_stages(run))
    assert shares is None and note.endswith("is not the recipe this run was trained with (stage2 recorded another recipe hash)")
    write_eval(run, "stage2", 4, "quick", {"ppl:math": ppl(3.2)}, tokens_seen=8192)
    write_report(run, tmp_path / "out", recipe=mixture_recipe)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "domain it upweights (" not in md and "stage2 recorded another recipe hash); pass the recipe the run was" in md
    assert domain_shares(tmp_path / "none.yaml", find_stages(run)) == (None, None)
    with pytest.raises(UserError, match="--recipe"):
        write_report(run, tmp_path / "out", recipe=tmp_path / "none.yaml")


# ---- preference pairs ----------------------------------------------------------------------------


def pair_result(acc: float, norm: float, margin: float, margin_stderr: float = 0.1, n: int = 200) -> dict:
    """pairs:<name>'s results as tools/run_eval.py writes them: lighteval's means and standard errors, and n."""
    return {"pair_acc": acc, "pair_acc_stderr": 0.03, "pair_acc_norm": norm, "pair_acc_norm_stderr": 0.03, "margin": margin,
            "margin_stderr": margin_stderr, "n": n}


@pytest.fixture
def pref_run(evals) -> Path:
    """The `evals` run with its SFT stage finished and a preference stage after it (4 steps x 256 tokens),
    and the held-out pairs evaluated at the end of stage2 (base) and of SFT."""
    sft = evals / "sft" / "local"
    (sft / "summary.json").write_text(json.dumps({"stage": "sft", "kind": "sft", "index": 2, "tokens": 1024, "steps": 2}))
    losses = (0.69, 0.6, 0.5, 0.4)
    write_stage(evals, "preference", [record("preference", "preference", s, 4, 256 * s, x) for s, x in enumerate(losses, start=1)],
                {"stage": "preference", "kind": "preference", "index": 3, "tokens": 1024, "steps": 4})
    write_eval(evals, "stage2", 4, "pairs_tiny", {"pairs:tiny": pair_result(0.50, 0.46, -0.21, 0.08)}, tokens_seen=8192)
    write_eval(evals, "sft", 2, "pairs_tiny", {"pairs:tiny": pair_result(0.55, 0.52, 0.30)}, tokens_seen=1024)
    return evals


def test_preference_pairs_table_plot_and_check(pref_run, tmp_path):
    write_eval(pref_run, "preference", 2, "pairs_tiny", {"pairs:tiny": pair_result(0.60, 0.58, 0.9)}, tokens_seen=512)
    write_eval(pref_run, "preference", 4, "pairs_tiny", {"pairs:tiny": pair_result(0.80, 0.74, 2.5, 0.2)}, tokens_seen=1024)
    out = tmp_path / "out"
    report = write_report(pref_run, out)
    md = (out / "report.md").read_text()
    section = md[md.index("## Preference pairs"):md.index("## Base vs SFT: evaluation")]
    # each stage's last evaluated checkpoint, in training order, named by its stage's kind
    assert section.endswith(
        "| task | model | checkpoint | pair accuracy | norm accuracy | mean margin (nats) | n |\n"
        "|---|---|---|---:|---:|---:|---:|\n"
        "| pairs:tiny | base | stage2 step 4 | 0.50 [0.43, 0.57] | 0.46 [0.39, 0.53] | -0.21 [-0.37, -0.05] | 200 |\n"
        "| pairs:tiny | SFT | sft step 2 | 0.55 [0.48, 0.62] | 0.52 [0.45, 0.59] | +0.30 [+0.10, +0.50] | 200 |\n"
        "| pairs:tiny | preference | preference step 4 | 0.80 [0.74, 0.85] | 0.74 [0.68, 0.80] | +2.50 [+2.11, +2.89] | 200 |\n\n")
    assert "a coin flip scores 0.50" in section
    # 160 vs 110 of 200: the Wilson intervals are apart
    assert ("- ✅ preference raises held-out pair accuracy over SFT (pairs:tiny, the intervals apart): pair_acc "
            "0.80 [0.74, 0.85] (n=200) at preference step 4 vs 0.55 [0.48, 0.62] (n=200) at sft step 2") in md
    # every checkpoint in the evaluation tables and the plot, with the coin flip as the chance line
    assert out / "eval_pairs.png" in report.eval_plots and (out / "eval_pairs.png").read_bytes().startswith(PNG_SIGNATURE)
    assert ("| pairs:tiny | pair_acc | 0.50 [0.43, 0.57] (n=200) | 0.55 [0.48, 0.62] (n=200) | 0.60 [0.53, 0.67] (n=200) | "
            "0.80 [0.74, 0.85] (n=200) |") in md
    _, points = points_of(pref_run, task="pairs:tiny")
    assert {p.chance for p in points if p.metric != "margin"} == {0.5} and {p.chance for p in points if p.metric == "margin"} == {None}
    # base vs SFT stays base vs SFT: the preference stage after it is not the SFT model
    assert "Base: stage2 step 4 (the last evaluated pretraining checkpoint); SFT: sft step 2." in md
    assert "| pairs:tiny | margin | -0.21 [-0.37, -0.05] (n=200) | 0.30 [0.10, 0.50] (n=200) | +0.510 | higher | better |" in md


@pytest.mark.parametrize("accuracy", [0.60, 0.50])
def test_preference_check_fails_inside_the_noise_or_below_sft(pref_run, accuracy):
    write_eval(pref_run, "preference", 4, "pairs_tiny", {"pairs:tiny": pair_result(accuracy, 0.6, 0.4)}, tokens_seen=1024)
    [(what, met)] = [(w, ok) for w, ok in checks_of(pref_run) if "pair accuracy" in w]
    assert met is False and what.startswith(f"preference raises held-out pair accuracy over SFT (pairs:tiny, the intervals apart): "
                                            f"pair_acc {accuracy:.2f} [")  # 120 vs 110 of 200 overlap; 100 is below


def test_no_preference_result_no_preference_check(pref_run, tmp_path):
    assert not [w for w, _ in checks_of(pref_run) if "pair accuracy" in w]  # base and SFT only
    write_eval(pref_run, "preference", 4, "pairs_tiny", {"pairs:tiny": pair_result(0.9, 0.9, 3.0)}, tokens_seen=1024)
    for path in (pref_run / "eval" / "sft").rglob("pairs_tiny.json"):  # nothing to compare it with
        path.unlink()
    assert not [w for w, _ in checks_of(pref_run) if "pair accuracy" in w]
    write_report(pref_run, tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| pairs:tiny | preference | preference step 4 | 0.90 [0.85, 0.93] |" in md and "| pairs:tiny | SFT |" not in md


def summary_of(stage: str, kind: str, index: int, steps: int, tokens: int, init_from: str | None) -> dict:
    return {"stage": stage, "kind": kind, "index": index, "train_steps": steps, "steps": steps, "tokens": tokens,
            "first_loss": 3.0, "final_loss": 2.0, "seconds": 1.0, "tokens_per_s": 1000.0, "init_from": init_from,
            "checkpoint": f"runs/wsd/{stage}/local/checkpoint-{steps}", "recipe_hash": "ab12cd34", "device": "cpu"}


@pytest.mark.parametrize("anneal_web,extension_web,met", [(2.0, 2.55, True), (2.6, 2.8, False)])
def test_branches_start_where_their_parent_ended_and_are_held_to_it(tmp_path, anneal_web, extension_web, met):
    """stable (4 steps x 1,024) -> constant and anneal, two arms of the same 1,024 tokens, and a context
    extension off stable: every branch starts at stable's end; the anneal arm must lower every held-out slice
    below stable (2.5), the extension keep each within 5% of it."""
    run = tmp_path / "runs" / "wsd"
    arms = [("stable", "pretrain", None), ("constant", "pretrain", "stable"), ("anneal", "anneal", "stable"),
            ("long", "long_context", "stable")]
    for index, (stage, kind, parent) in enumerate(arms):
        steps = 4 if parent is None else 1
        origin = None if parent is None else str(run / parent / "local" / "checkpoint-4")
        write_stage(run, stage, [record(stage, kind, s, steps, 1024 * s, 3.0 - 0.1 * s, lr=1e-3) for s in range(1, steps + 1)],
                    summary_of(stage, kind, index, steps, 1024 * steps, origin))
    for stage, web in (("stable", 2.5), ("constant", 2.4), ("anneal", anneal_web), ("long", extension_web)):
        write_eval(run, stage, 4 if stage == "stable" else 1, "quick", {"ppl:web": ppl(web)}, tokens_seen=None)
    stages = find_stages(run)
    curves = {c.stage: c for c in loss_curves(stages)}
    assert curves["stable"].start == 0 and all(curves[s].start == 4096 and curves[s].end == 5120 for s in ("constant", "anneal", "long"))
    report = write_report(run)
    text = report.markdown.read_text()
    assert ("✅ anneal (annealing) lowers every held-out slice below stable" in text) == met
    assert ("✅ long keeps short-context held-out perplexity within 5% of stable" in text) == met
    assert "constant (annealing)" not in text  # a pretrain arm is not an annealing stage


def test_a_context_extension_is_not_held_to_the_domain_it_upweights(tmp_path):
    """A long_context stage's larger web share is long documents: its short-context slices are held
    within 5% of its parent (extension_kept), not required to fall like a pretraining stage's."""
    from smolrecipe.report.checks import mixture_checks
    from smolrecipe.runs import StageLog

    def stage(name: str, kind: str, parent: str | None) -> StageLog:
        origin = str(tmp_path / parent / "local" / "checkpoint-4") if parent else None
        return StageLog(name, tmp_path / name, [], {"kind": kind, "init_from": origin})

    def point(name: str, value: float) -> EvalPoint:
        return EvalPoint("tier2", "ppl:web", "bits_per_byte", name, 4, 0, value, 10)

    stages = [stage("stage2", "pretrain", None), stage("stage3", "pretrain", "stage2"), stage("long", "long_context", "stage3")]
    shares = {"stage2": {"web": 0.5, "math": 0.5}, "stage3": {"web": 0.7, "math": 0.3}, "long": {"web": 0.9, "math": 0.1}}
    points = [point("stage2", 0.50), point("stage3", 0.45), point("long", 0.46)]
    checks = mixture_checks(points, stages, shares)
    assert [ok for _, ok in checks] == [True] and checks[0][0].startswith("stage3 lowers held-out loss")
    stages[2].summary["kind"] = "pretrain"  # the same stage as plain pretraining is held to it, and fails
    assert [ok for _, ok in mixture_checks(points, stages, shares)] == [True, False]
