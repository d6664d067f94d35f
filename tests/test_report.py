"""tools/report.py and smolrecipe.report.run_report on synthetic run folders: the curve, the PNG, the Markdown."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from smolrecipe.errors import UserError
from smolrecipe.report.curves import loss_curves
from smolrecipe.report.evals import read_evals
from smolrecipe.report.run_report import ReportInputs, human_tokens, learning_checks, md_cell, write_report
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
    assert "SFT 2 of 3 answers, base 1 of 3" in md
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
    summary_path = run / "stage2" / "local" / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["final_loss"] = 6.0  # above its first loss, 5.5
    summary_path.write_text(json.dumps(summary))
    (run / "samples.json").write_text(json.dumps(SAMPLES))
    report = write_report(run)
    md = (run / "report.md").read_text()
    assert "- ✅ stage1: final loss 5.00 below first 10.00" in md
    assert "- ❌ stage2: final loss 6.00 below first 5.50" in md
    assert "- ✅ SFT ends 2 of 3 answers with the end-of-turn token (base: 1 of 3)" in md
    assert "sft: final loss" not in md  # unfinished stages are not judged
    assert "checks 2/3 met" in report.summary


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
    path.write_text(json.dumps({
        "suite": suite, "checkpoint": f"runs/tiny/{stage}/local/checkpoint-{step}",
        "model": {"recipe": "tiny", "stage": stage, "stage_index": 0, "kind": "sft" if stage == "sft" else "pretrain",
                  "step": step, "tokens_seen": tokens_seen, "recipe_hash": "ab12cd34", "backend": "local"},
        "chat_prompts": stage == "sft", "limit": 24, "items": 10, "seconds": 1.0, "items_per_s": 10.0, "tasks": tasks,
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
    assert "| mc:piqa | acc_norm | 0.300 (n=24) | 0.500 (n=24) | 0.400 (n=24) |" in md
    assert "| task | metric | sft step 2 |" in md  # tier 4: only the SFT checkpoint ran it
    assert "| sft_suite | instruction_match | 0.250 (n=8) |\n| sft_suite | all_checks_pass | 0.125 (n=8) |" in md
    assert "code_parse" not in md  # NaN everywhere: no row


def test_eval_base_vs_sft(evals):
    write_report(evals)
    md = (evals / "report.md").read_text()
    section = md[md.index("## Base vs SFT: evaluation"):]
    assert "Base: stage2 step 4 (the last evaluated pretraining checkpoint); SFT: sft step 2." in section
    assert "| task | metric | base | SFT | SFT − base | better when | SFT is |" in section
    assert "| ppl:web | bits_per_byte | 3.000 (n=17) | 2.500 (n=17) | -0.500 | lower | better |" in section
    assert "| ppl:web | token_ppl | 4,096.0 (n=17) | 1,024.0 (n=17) | -3,072.0 | lower | better |" in section
    assert "| mc:piqa | acc_norm | 0.500 (n=24) | 0.400 (n=24) | -0.100 | higher | worse |" in section
    assert "| ppl:code | bits_per_byte | 3.500 (n=28) | — | — | lower | — |" in section
    assert "| sft_suite | clean_end | — | 0.750 (n=8) | — | higher | — |" in section


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
