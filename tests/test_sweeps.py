"""Sweeps: the spec's rules, the variant recipes, running and resuming a sweep, its result."""

import json
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from smolrecipe.errors import UserError
from smolrecipe.recipe.envpaths import resolve_recipe
from smolrecipe.recipe.estimates import count_params
from smolrecipe.recipe.loading import load_recipe
from smolrecipe.recipe.plan import build_plan, source_folder
from smolrecipe.sweeps.spec import load_sweep
from smolrecipe.sweeps.variants import plan_sweep, recommended_variant, shape_for, write_variants

SWEEPS = ROOT / "sweeps"


def spec(tmp_path: Path, name: str = "tiny_scaling", **changes) -> Path:
    """A committed sweep spec with `changes` (None deletes a key), written to tmp_path."""
    data = yaml.safe_load((SWEEPS / f"{name}.yaml").read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# ---- the spec ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.stem for p in SWEEPS.glob("*.yaml")))
def test_committed_sweeps_plan(name):
    plan = plan_sweep(load_sweep(SWEEPS / f"{name}.yaml"))
    assert plan.variants and all(v.recipe.name.startswith(plan.sweep.name + "-") for v in plan.variants)


@pytest.mark.parametrize("changes, field, words", [
    ({"scales": [{"name": "a", "hidden_size": 32, "num_layers": 1}]}, "scales", "at least two"),
    ({"mixtures": [{"web": 1.0}]}, "mixtures", "mixture sweep's setting"),
    ({"stage": "stage9"}, "stage", "not a stage of tiny"),
    ({"stage": "sft"}, "stage", "pretraining stage"),
    ({"eval_suite": "world"}, "eval_suite", "no held-out loss for domain"),
    ({"eval_suite": "nope"}, "eval_suite", "unknown suite"),
    ({"recipe": "recipes/none.yaml"}, "recipe", "does not exist"),
    ({"tokens": [1000, 1000]}, "tokens", "listed twice"),
    ({"holdout": [{"name": "h48", "hidden_size": 48, "num_layers": 1}]}, "scales", "used twice"),
    ({"scale": []}, "scale", "did you mean 'scales'"),
    ({"law": "cubic"}, "law", "use one of"),
])
def test_bad_scaling_specs_name_the_field(tmp_path, changes, field, words):
    with pytest.raises(UserError) as err:
        plan_sweep(load_sweep(spec(tmp_path, **changes)))
    assert err.value.field == field and words in str(err.value), str(err.value)


@pytest.mark.parametrize("changes, field, words", [
    ({"mixtures": [{"web": 0.5, "math": 0.4, "code": 0.2}, {"web": 1.0}]}, "mixtures[0]", "do not sum to 1"),
    ({"mixtures": [{"web": 1.0}]}, "mixtures", "nothing to compare"),
    ({"holdout": [{"name": "x", "params": 1000}]}, "holdout", "scaling sweep's setting"),
    ({"tokens": [1000, 2000]}, "tokens", "one budget"),
    ({"objective": {"web": 0, "math": 0, "code": 0}}, "objective", "not all zero"),
    ({"stage": "stage1"}, "mixtures", "not in stage1's mixture"),
])
def test_bad_mixture_specs_name_the_field(tmp_path, changes, field, words):
    with pytest.raises(UserError) as err:
        plan_sweep(load_sweep(spec(tmp_path, "tiny_mixture", **changes)))
    assert err.value.field == field and words in str(err.value), str(err.value)


def test_a_scale_is_a_target_or_a_shape(tmp_path):
    with pytest.raises(UserError, match="gives `params` and shape fields"):
        load_sweep(spec(tmp_path, scales=[{"name": "a", "params": 1000, "hidden_size": 32}, {"name": "b", "params": 2000}]))
    with pytest.raises(UserError, match="needs `params`, or `hidden_size` and `num_layers`"):
        load_sweep(spec(tmp_path, scales=[{"name": "a", "hidden_size": 32}, {"name": "b", "params": 2000}]))


# ---- variants ----------------------------------------------------------------------------------------


def test_a_parameter_target_keeps_the_base_models_proportions():
    base = load_recipe(ROOT / "recipes" / "llama500m.yaml")
    from smolrecipe.sweeps.spec import Scale
    from smolrecipe.sweeps.variants import non_embedding

    for target in (10_000_000, 50_000_000, 100_000_000):
        shape = shape_for(base.model, Scale(name="s", params=target), base)
        n = non_embedding(base, shape)
        assert abs(n / target - 1) < 0.25, (target, shape, n)
        assert shape["hidden_size"] % base.model.head_dim == 0
        assert shape["hidden_size"] // shape["num_attention_heads"] == base.model.head_dim  # the head size kept
        assert shape["num_attention_heads"] // shape["num_key_value_heads"] == 4  # GQA 4:1 kept
        assert 0.5 <= shape["hidden_size"] / shape["num_layers"] / 32 <= 2  # width per layer, roughly
    # the base's own size maps back onto the base's shape
    own = shape_for(base.model, Scale(name="s", params=count_params(base).non_embedding), base)
    assert (own["hidden_size"], own["num_layers"]) == (base.model.hidden_size, base.model.num_layers)


def test_scaling_variants_are_the_stage_alone_at_each_scale():
    plan = plan_sweep(load_sweep(SWEEPS / "tiny_scaling.yaml"))
    base = plan.base
    assert [v.label for v in plan.variants] == ["h48", "h48x2", "h96", "h144", "h192"]
    assert [v.role for v in plan.variants] == ["point"] * 4 + ["holdout"]
    shapes = [(v.recipe.model.hidden_size, v.recipe.model.num_layers, v.recipe.model.num_attention_heads) for v in plan.variants]
    assert shapes == [(48, 1, 1), (48, 2, 1), (96, 2, 2), (144, 3, 3), (192, 4, 4)]
    assert plan.variants[-1].recipe.model == base.model  # the holdout is the tiny model itself
    for v in plan.variants:
        (stage,) = v.recipe.stages
        assert stage.name == "stage1" and stage.init_from is None and stage.replay is None
        assert build_plan(v.recipe).stages[0].tokens == 1_310_720
        assert stage.eval_suites == ["sweep_tiny"]
        assert v.recipe.training == base.training and v.recipe.tokenizer == base.tokenizer
        # one copy of the data for the whole sweep, budgets covering every variant
        assert source_folder(v.recipe, "prose").endswith("/tiny_scaling/prose")
        assert {s: v.recipe.sources[s].max_tokens for s in plan.budgets} == plan.budgets
    # 1,310,720 x (0.6, 0.25, 0.15) x 1.05, up to 3 figures
    assert plan.budgets == {"prose": 826_000, "forum": 345_000, "chats_pretrain": 207_000}
    assert plan.weights == {"web": 1.0}


def test_mixture_variants_keep_each_domains_sources_and_fold_in_replay():
    plan = plan_sweep(load_sweep(SWEEPS / "tiny_mixture.yaml"))
    assert len(plan.variants) == 7 and all(v.role == "point" for v in plan.variants)
    first = plan.variants[0].recipe.stages[0]
    assert {d: m.share for d, m in first.mixture.items()} == {"web": 0.6, "math": 0.2, "code": 0.2}
    # stage 2 replays stage 1 (prose 0.6 / forum 0.25 / chats 0.15, its own web shares): web keeps them
    assert first.mixture["web"].sources == {"prose": 0.6, "forum": 0.25, "chats_pretrain": 0.15}
    assert plan.weights == {"web": 1 / 3, "code": 1 / 3, "math": 1 / 3}
    budgets = {s: max(build_plan(v.recipe).stages[0].tokens_by("source").get(s, 0) for v in plan.variants) for s in plan.budgets}
    assert all(plan.budgets[s] >= budgets[s] * 1.05 for s in budgets)
    # the recommended mixture has the proxies' budgets, so their data serves it
    rec = recommended_variant(plan, {"web": 0.3, "math": 0.3, "code": 0.4})
    assert {s: rec.recipe.sources[s].max_tokens for s in plan.budgets} == plan.budgets
    assert {d: m.share for d, m in rec.recipe.stages[0].mixture.items()} == {"web": 0.3, "math": 0.3, "code": 0.4}


def test_variant_recipes_written_read_back_and_render(tmp_path, monkeypatch):
    monkeypatch.setenv("SMOLRECIPE_RUNS", str(tmp_path / "runs"))
    plan = plan_sweep(load_sweep(SWEEPS / "tiny_scaling.yaml"))
    assert plan.folder == tmp_path / "runs" / "sweeps" / "tiny_scaling"
    paths = write_variants(plan)
    stamps = [p.stat().st_mtime_ns for p in paths]
    assert write_variants(plan) == paths and [p.stat().st_mtime_ns for p in paths] == stamps  # unchanged: not rewritten
    from smolrecipe.backends.nanotron.generate import render

    for variant, path in zip(plan.variants, paths, strict=True):
        again = load_recipe(path)
        assert again.hash() == variant.recipe.hash()
        assert resolve_recipe(again).paths.runs == str(tmp_path / "runs" / "sweeps" / "tiny_scaling")
        rendered = render(path)  # nanotron's configs, checked against its schema
        config = yaml.safe_load(rendered.files["stage1.yaml"])
        assert config["model"]["model_config"]["hidden_size"] == again.model.hidden_size
        assert config["data_stages"][0]["data"]["dataset"]["dataset_folder"][0].endswith("/tiny_scaling/prose")


def test_sweep_dry_run_prints_the_cost_next_to_the_main_runs(capsys):
    import sweep

    assert sweep.main([str(SWEEPS / "tiny_scaling.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "h192" in out and "holdout" in out and "of the main run's" in out and "nothing written" in out


# ---- fits on the sweep's own points -----------------------------------------------------------------


def measured(plan, losses: dict[str, dict[str, float]], seconds: float = 1.0):
    """The plan's points as if trained and scored, with the given held-out losses per label."""
    from smolrecipe.sweeps.points import point_of

    points = []
    for v in plan.variants:
        p = point_of(plan, v)
        if v.label in losses:
            p.status, p.loss, p.seconds = "done", losses[v.label], seconds
            p.objective = sum(plan.weights[d] * p.loss[d] for d in plan.domains)
        points.append(p)
    return points


def test_the_forecast_is_written_before_the_holdout_trains_and_kept(tmp_path, monkeypatch):
    from smolrecipe.sweeps import analysis
    from smolrecipe.sweeps.report import write_result

    monkeypatch.setenv("SMOLRECIPE_RUNS", str(tmp_path / "runs"))
    plan = plan_sweep(load_sweep(SWEEPS / "tiny_scaling.yaml"))
    law = lambda n: 1.2 + 40.0 * n ** -0.3  # noqa: E731
    fitted = {v.label: {"web": law(count_params(v.recipe).non_embedding)} for v in plan.by_role("point")}
    points = measured(plan, fitted)
    made = analysis.forecast(plan, points)
    holdout = plan.by_role("holdout")[0]
    truth = law(count_params(holdout.recipe).non_embedding)
    assert made["holdout"]["h192"]["predicted_loss"] == pytest.approx(truth, rel=1e-4)  # points on the law: exact
    assert made["holdout"]["h192"]["status_when_predicted"] == "pending"
    assert made["fit"]["params"]["alpha"] == pytest.approx(0.3, abs=1e-3) and made["fit"]["params"]["E"] == pytest.approx(1.2, abs=1e-3)
    # the holdout trains and is measured: the forecast on file is the one made before
    points = measured(plan, {**fitted, "h192": {"web": truth * 1.1}})
    result = analysis.scaling_result(plan, points)
    assert result["forecast_written"] == made["written"] and result["predicted_before_training"]
    assert result["measured_loss"] == pytest.approx(truth * 1.1) and result["relative_error"] == pytest.approx(1 / 1.1 - 1)
    assert result["holdout"][0]["inside_band"] is False  # exact points: a band of zero width
    report = write_result(plan, result, points)
    text = report.read_text()
    assert "| h192 | 1.59M | " in text and "before the held-out scale was trained" in text
    assert json.loads((plan.folder / "sweep.json").read_text())["measured_loss"] == pytest.approx(truth * 1.1)
    assert (plan.folder / "scaling.png").stat().st_size > 10_000
    # new measurements of the fitted points: a new forecast, which no longer counts as blind
    again = measured(plan, {**{k: {"web": v["web"] * 1.01} for k, v in fitted.items()}, "h192": {"web": truth}})
    redone = analysis.scaling_result(plan, again)
    assert not redone["predicted_before_training"] and redone["predicted_loss"] == pytest.approx(truth * 1.01, rel=1e-4)


def test_the_recommended_mixture_minimises_the_fitted_laws(tmp_path, monkeypatch):
    import numpy as np

    from smolrecipe.sweeps import analysis
    from smolrecipe.sweeps.report import write_result

    monkeypatch.setenv("SMOLRECIPE_RUNS", str(tmp_path / "runs"))
    plan = plan_sweep(load_sweep(SWEEPS / "tiny_mixture.yaml"))
    # a known mixing law per domain: each domain's loss falls with its own share
    t = {"web": (-2.0, 0.3, 0.2), "math": (0.1, -3.0, 0.4), "code": (0.2, 0.1, -2.5)}  # over (web, math, code)

    def loss(shares):
        r = np.array([shares.get(d, 0.0) for d in ("web", "math", "code")])
        return {d: float(1.0 + np.exp(0.5 + np.dot(t[d], r))) for d in plan.domains}

    points = measured(plan, {v.label: loss(v.mixture) for v in plan.by_role("point")})
    made = analysis.recommend(plan, points)
    assert sum(made["shares"].values()) == pytest.approx(1.0, abs=1e-12)
    for d, (lo, hi) in made["bounds"].items():
        assert lo - 1e-9 <= made["shares"][d] <= hi + 1e-9
    # the law recovered: its prediction at the recommended shares is the truth there
    truth = loss(made["shares"])
    assert made["objective"] == pytest.approx(np.mean(list(truth.values())), rel=1e-3)
    # and no proxy is better than the recommendation
    assert made["objective"] <= min(p.objective for p in points) + 1e-9
    from smolrecipe.sweeps.points import point_of

    trained = measured(plan, {v.label: loss(v.mixture) for v in plan.by_role("point")})
    p = point_of(plan, recommended_variant(plan, made["shares"]))
    p.status, p.loss = "done", truth
    p.objective = sum(plan.weights[d] * truth[d] for d in plan.domains)
    result = analysis.mixture_result(plan, [*trained, p], made)
    assert result["recommended"]["proxies_beaten"] == 7
    assert "web: {share: " in result["mixture_yaml"] and "prose: 0.6, forum: 0.25, chats_pretrain: 0.15" in result["mixture_yaml"]
    text = write_result(plan, result, [*trained, p]).read_text()
    assert "beats 7 of the 7 proxies" in text and (plan.folder / "mixture.png").is_file()


def test_fit_before_the_points_are_measured_says_what_to_run(tmp_path, monkeypatch, capsys):
    import sweep

    monkeypatch.setenv("SMOLRECIPE_RUNS", str(tmp_path / "runs"))
    assert sweep.main([str(SWEEPS / "tiny_scaling.yaml"), "--fit"]) == 2
    err = capsys.readouterr().err
    assert "['h48', 'h48x2', 'h96', 'h144'] are not trained and scored yet" in err and "--run first" in err
    assert not (tmp_path / "runs" / "sweeps" / "tiny_scaling" / "forecast.json").exists()


# ---- a sweep run for real, killed and resumed ------------------------------------------------------------


@pytest.mark.slow
def test_a_killed_sweep_resumes_where_it_stopped(prepared, tmp_path):
    """Kill the whole sweep (its process group, as a lost node would) while the second scale trains;
    the rerun keeps the first scale as it was, resumes the second from its checkpoint, forecasts,
    trains the holdout and writes the result."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from demo.corpus import write_demo_corpus

    recipe_path, data = prepared
    write_demo_corpus(data / "heldout", seed=1, scale=0.05)  # what sweep_tiny scores, under $SMOLRECIPE_DATA
    base = yaml.safe_load(recipe_path.read_text())
    base["paths"]["runs"] = str(tmp_path / "runs")
    base["tracking"]["wandb_mode"] = "disabled"
    base["training"]["checkpoint_interval"] = 8
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
    spec_path = tmp_path / "mini.yaml"
    spec_path.write_text(yaml.safe_dump({
        "name": "mini", "kind": "scaling", "recipe": str(tmp_path / "base.yaml"), "stage": "stage1", "eval_suite": "sweep_tiny",
        "tokens": [16 * 2048], "law": "power", "bootstrap": 50,
        "scales": [{"name": "a", "hidden_size": 32, "num_layers": 1}, {"name": "b", "hidden_size": 64, "num_layers": 1}],
        "holdout": [{"name": "c", "hidden_size": 64, "num_layers": 2}],
        "lr": {"peak": 4e-3, "warmup_steps": 2, "min": 4e-4, "decay": "cosine"}}, sort_keys=False))
    folder = tmp_path / "runs" / "sweeps" / "mini"
    env = {**os.environ, "SMOLRECIPE_DATA": str(data), "WANDB_MODE": "disabled"}
    cmd = [sys.executable, str(ROOT / "tools" / "sweep.py"), str(spec_path), "--run"]

    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    checkpoint = folder / "mini-b" / "stage1" / "local" / "checkpoint-8"
    deadline = time.monotonic() + 600
    while not checkpoint.is_dir():
        assert proc.poll() is None, "the sweep ended before the second scale's first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = folder / "mini-a" / "stage1" / "local" / "summary.json"
    scored = folder / "mini-a" / "eval" / "stage1" / "step-16" / "sweep_tiny.json"
    stamps = (first.stat().st_mtime_ns, scored.stat().st_mtime_ns)
    assert not (folder / "mini-b" / "stage1" / "local" / "summary.json").exists()
    assert not (folder / "forecast.json").exists()

    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    out = again.stdout
    assert "[1/2] a: done before" in out and "[2/2] b: resuming" in out, out
    assert (first.stat().st_mtime_ns, scored.stat().st_mtime_ns) == stamps  # the finished scale is not redone
    steps = [json.loads(line)["step"] for line in (folder / "mini-b" / "stage1" / "local" / "log.jsonl").read_text().splitlines()]
    assert sorted(set(steps)) == list(range(1, 17))
    result = json.loads((folder / "sweep.json").read_text())
    assert result["predicted_before_training"] and result["measured_loss"] > 0 and result["predicted_loss"] > 0
    assert [p["status"] for p in result["points"]] == ["done", "done", "done"]
    assert out.strip().splitlines()[-1].startswith("mini: 3 variant(s)") and "held-out scale predicted" in out
    # once more: everything is done, nothing trains, the numbers are the same
    third = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert third.returncode == 0 and third.stdout.count("done before") == 3
    assert json.loads((folder / "sweep.json").read_text())["measured_loss"] == result["measured_loss"]


@pytest.mark.parametrize("name, variants, stage", [("llama500m_scaling", 3, "stage1"), ("llama500m_mixture", 7, "stage2")])
def test_reference_sweeps_dry_run_as_slurm_chains(name, variants, stage, monkeypatch, capsys, tmp_path):
    import sweep

    monkeypatch.setenv("SCRATCH", str(tmp_path / "scratch"))
    assert sweep.main([str(SWEEPS / f"{name}.yaml"), "--dry-run", "--slurm"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("sbatch ")]
    data_jobs = [line for line in lines if line.endswith(".yaml") and "/slurm/prepare_data.sh " in line]
    stages = [line for line in lines if f"/slurm/{stage}.sh " in line]
    evals = [line for line in lines if "/slurm/eval.sh " in line]
    assert len(data_jobs) == 1 and len(stages) == len(evals) == variants and len(lines) == 1 + 2 * variants
    first = f"<{'n10m' if 'scaling' in name else 'mix1'}-prepare_data>"
    assert all(f"--dependency=afterok:{first}" in line for line in stages)  # one data job serves every variant
    assert all("--gpus-per-node=4" in line for line in stages) and all("--gpus-per-node=1" in line for line in evals)
    assert all(str(tmp_path / "scratch" / "smolrecipe" / "runs" / "sweeps" / name / "recipes") in line for line in lines)


def test_the_preflight_shows_what_each_sweep_costs(tmp_path, capsys):
    import make_config

    assert make_config.main([str(ROOT / "recipes" / "llama500m.yaml"), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "sweep llama500m_scaling: 3 variant(s)" in out and "sweep llama500m_mixture: 8 variant(s)" in out
    assert "A100-hours at 30% MFU" in out and "of the main run's 271" in out


@pytest.mark.parametrize("name", ["llama500m_scaling", "llama500m_mixture"])
def test_reference_sweep_variants_render_nanotron_configs(name, monkeypatch, tmp_path):
    from smolrecipe.backends.nanotron.generate import render

    monkeypatch.setenv("SCRATCH", str(tmp_path / "scratch"))
    plan = plan_sweep(load_sweep(SWEEPS / f"{name}.yaml"))
    for variant, path in zip(plan.variants, write_variants(plan), strict=True):
        rendered = render(path)  # checked against nanotron's config schema before it is returned
        model = yaml.safe_load(rendered.files[f"{plan.stage}.yaml"])["model"]["model_config"]
        assert model["hidden_size"] == variant.recipe.model.hidden_size
        assert model["num_attention_heads"] // model["num_key_value_heads"] == 4  # GQA 4:1 kept at every scale
        assert model["vocab_size"] == plan.base.model.vocab_size
