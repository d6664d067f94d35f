"""nanotron's own code, on this CPU: our entry point trains every stage of the tiny recipe with
nanotron's DistributedTrainer, and the local backend is held to it.

nanotron runs here from the vendored wheels of the pinned commit (make install puts them in .venv);
tests/engine_cpu holds the test-only shims every engine process gets through PYTHONPATH: torch
stand-ins for the three flash-attn kernels (each checked against an independent reference in
test_engine_standins.py) and CUDA placement moved to the CPU, with a gloo process group.
Without nanotron this module skips, saying how to install it; under CI it fails instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import ENGINE_SHIMS, ENGINE_SITE, ROOT, recipe_variant, shorten

from smolrecipe.backends.lr_schedule import stage_lrs
from smolrecipe.data.batches import IGNORE_INDEX
from smolrecipe.kinds import kind_of
from smolrecipe.recipe.envpaths import resolve_recipe
from smolrecipe.recipe.loading import load_recipe
from smolrecipe.recipe.plan import build_plan
from smolrecipe.runs import LOG, SUMMARY, find_stages, read_log

SHIMS = ENGINE_SHIMS
BIN = Path(sys.executable).parent
MISSING = None if (ENGINE_SITE / "nanotron").is_dir() else (
    f"nanotron is not installed in {ENGINE_SITE}: `make test` puts the pinned commit's wheel from ../shared/vendor "
    "there (VENDOR=... elsewhere; on a cluster: slurm/setup_env.sh)")
if MISSING and os.environ.get("CI"):
    raise RuntimeError(f"CI must run nanotron's own code: {MISSING}")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(MISSING is not None, reason=MISSING or "")]


def engine_env(**extra: str) -> dict[str, str]:
    path = (str(SHIMS), str(ENGINE_SITE), os.environ.get("PYTHONPATH"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in path if p),
               PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    env.update(extra)
    return env


def torchrun(*args: str, nproc: int = 1) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "torchrun"), "--standalone", f"--nproc_per_node={nproc}", *args], cwd=ROOT,
                          env=engine_env(), capture_output=True, text=True, timeout=600)


def short_engine_chain(data: dict) -> None:
    """Two steps a stage (three for stage 1, which is stopped after one and resumed), a checkpoint every step."""
    shorten(data, steps=(3, 2, 2, 2), sft_steps=2, warmup=1, checkpoint_interval=1)


@pytest.fixture(scope="module")
def engine_chain(prepared, tmp_path_factory):
    """The tiny recipe trained by our entry point through the stage job (tools/run_stage.py), stage 1
    stopped by the job's stop file after its first step and resumed. Returns (recipe path, recipe, outputs)."""
    import run_stage

    path = recipe_variant(prepared[0], tmp_path_factory.mktemp("engine") / "tiny.yaml", short_engine_chain)
    recipe = resolve_recipe(load_recipe(path))
    outputs = {}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in engine_env().items():
            mp.setenv(key, value)
        # Stage 1, first job: written as the job writes it, then stopped by the stop file after step 1.
        assert run_stage.main([str(path), "stage1", "--backend", "nanotron", "--gpus", "1", "--dry-run"]) == 0
        run_dir = Path(build_plan(recipe).stage("stage1").checkpoints_path).parent
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        config["checkpoints"]["save_initial_state"] = True  # the random init, to hold step 1 to the local backend
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        (run_dir / "stop-request").write_text("test\n")
        first = torchrun(str(ROOT / "tools" / "train_nanotron.py"), "--config-file", str(run_dir / "config.yaml"))
        outputs["stage1-stopped"] = first
        assert "stage1: stopped at step 1 of 3 with a checkpoint" in first.stdout, first.stdout[-3000:] + first.stderr[-3000:]
        for stage in ("stage1", "stage2", "stage3", "sft", "preference", "long"):  # the requeued job, then the chain
            rc = run_stage.main([str(path), stage, "--backend", "nanotron", "--gpus", "1"])
            assert rc == 0, stage
    return path, recipe, outputs


def hf_folder(checkpoint: Path, recipe, out: Path) -> Path:
    import convert

    if not out.is_dir():
        assert convert.main(["nanotron-to-hf", str(checkpoint), str(out), "--tokenizer", str(recipe.tokenizer.path)]) == 0
    return out


def local_loss(recipe, stage_name: str, weights: Path, step: int, out: Path) -> float:
    """The local backend's loss at `step` of a stage from `weights`: its Trainer, data and collation."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from smolrecipe.backends.local.model import llama_config
    from smolrecipe.backends.local.train import build_trainer
    from smolrecipe.data.tokenizer import load_tokenizer

    stage = build_plan(recipe).stage(stage_name)
    tokenizer = load_tokenizer(recipe.tokenizer.path)
    # under the stage's RoPE base, as load_parent does (a context extension's parent was saved with the old one)
    config, expected = LlamaConfig.from_pretrained(weights), llama_config(recipe, stage)
    config.rope_parameters, config.max_position_embeddings = expected.rope_parameters, expected.max_position_embeddings
    model = LlamaForCausalLM.from_pretrained(weights, config=config, dtype=torch.float32)
    dataset, collate = kind_of(stage.kind).local_data(recipe, stage, tokenizer)
    trainer, _ = build_trainer(recipe, stage, model, dataset, collate, tokenizer, out, [])
    accumulation = stage.global_batch // stage.micro_batch_size
    micro_batches = list(islice(trainer.get_train_dataloader(), step * accumulation))[-accumulation:]
    with torch.no_grad():
        return float(np.mean([trainer.compute_loss(model, batch).item() for batch in micro_batches]))


def logged(recipe, stage: str) -> list[dict]:
    return read_log(Path(build_plan(recipe).stage(stage).checkpoints_path).parent / LOG)[0]


# ---------------------------------------------------------------------------------------------
# The engine checks of make_config.py --check (and slurm/setup_env.sh): nanotron's parser, its LR


def _stand_in_tokenizer(folder: Path, vocab_size: int) -> None:
    """A word-level tokenizer with exactly the recipe's vocabulary: nanotron checks the model's
    vocab_size against the tokenizer named in the data folders' metadata."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(vocab_size)}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="t0")),
                                  bos_token="t1", eos_token="t2", unk_token="t0")
    tok.save_pretrained(folder)


def make_config_check(recipe: Path, **env: str) -> list[str]:
    done = subprocess.run([sys.executable, "tools/make_config.py", str(recipe), "--check", "--out", env.pop("OUT")],
                          cwd=ROOT, env=engine_env(**env), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [line for line in done.stdout.splitlines() if line.startswith("check: ") and ".yaml: " in line]


def test_reference_configs_load_with_nanotron_and_its_lr_is_ours(root, tmp_path):
    from smolrecipe.backends.nanotron.generate import render

    env = {"SCRATCH": str(tmp_path), "OUT": str(tmp_path / "configs")}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCRATCH", str(tmp_path))
        rendered = render(root / "recipes" / "llama500m.yaml", resolve=True)
    recipe = rendered.plan.recipe
    _stand_in_tokenizer(Path(recipe.tokenizer.path), recipe.model.vocab_size)
    for stage in rendered.plan.stages:
        for fw in stage.weights:  # what datatrove's DocumentTokenizer writes next to each .ds file
            Path(fw.folder).mkdir(parents=True, exist_ok=True)
            (Path(fw.folder) / "000_tokenized.ds.metadata").write_text(f"{recipe.tokenizer.path}|4\n")
    lines = make_config_check(root / "recipes" / "llama500m.yaml", **env)
    nanotron = [f"{s.name}.yaml" for s in rendered.plan.stages if s.kind != "preference"]
    # the preference stage's config is TRL's (checked by its DPOConfig), the others nanotron's, twice
    assert [line.split(":")[1].strip() for line in lines] == ["preference.yaml", *nanotron * 2]
    assert all(": ok: " in line for line in lines), lines
    assert "ok: accepted by trl.DPOConfig" in lines[0] and "ok: LR at all 53,500 steps" in lines[len(nanotron) + 1]


@pytest.mark.parametrize("name,anneal,steps", [("tiny_wsd", "anneal", "100"), ("llama500m_wsd", "stage3", "15,260")])
def test_warmup_stable_decay_configs_load_with_nanotron_and_their_lr_is_ours(root, tmp_path, name, anneal, steps):
    """The warmup-stable-decay recipes: nanotron's own scheduler gives each stage the LR our plan gives
    it, so the annealing stage starts where the stable stage ends (test_midtraining holds the plan's LRs
    continuous)."""
    from smolrecipe.backends.nanotron.generate import render

    env = {"SMOLRECIPE_DATA": str(tmp_path / "data"), "SMOLRECIPE_RUNS": str(tmp_path / "runs"), "SCRATCH": str(tmp_path)}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        rendered = render(root / "recipes" / f"{name}.yaml", resolve=True)
    recipe = rendered.plan.recipe
    _stand_in_tokenizer(Path(recipe.tokenizer.path), recipe.model.vocab_size)
    for stage in rendered.plan.stages:
        for fw in stage.weights:
            Path(fw.folder).mkdir(parents=True, exist_ok=True)
            (Path(fw.folder) / "000_tokenized.ds.metadata").write_text(f"{recipe.tokenizer.path}|{2 if name == 'tiny_wsd' else 4}\n")
    lines = make_config_check(root / "recipes" / f"{name}.yaml", **env, OUT=str(tmp_path / "configs"))
    assert all(": ok: " in line for line in lines), lines
    assert any(line.startswith(f"check: {anneal}.yaml") and f"ok: LR at all {steps} steps" in line for line in lines), lines


def test_tiny_configs_load_with_nanotron_on_their_prepared_data(prepared, tmp_path):
    recipe = recipe_variant(prepared[0], tmp_path / "tiny.yaml")
    lines = make_config_check(recipe, OUT=str(tmp_path / "configs"))
    assert len(lines) == 11 and all(": ok: " in line for line in lines), lines
    assert "ok: loaded by nanotron's get_config_from_file" in lines[1]  # stage 1: reads its folders' metadata


# ---------------------------------------------------------------------------------------------
# Our entry point trains every stage


def test_stage1_stops_at_a_checkpoint_and_resumes_to_the_local_backends_loss(engine_chain, tmp_path):
    _, recipe, _ = engine_chain
    stage = build_plan(recipe).stage("stage1")
    checkpoints = Path(stage.checkpoints_path)
    records = logged(recipe, "stage1")
    assert [r["step"] for r in records] == [1, 2, 3]  # step 1 from the stopped job, 2-3 from the resumed one
    assert all((checkpoints / step).is_dir() for step in ("0", "1", "3"))  # init, the stop, the end
    assert [r["lr"] for r in records] == pytest.approx(stage_lrs(stage)[1:] + [stage.lr.min], rel=1e-9)
    assert records[0]["loss"] == pytest.approx(np.log(recipe.model.vocab_size), rel=0.01)  # random init
    # Step 1 from nanotron's random init (saved as checkpoint 0): the local backend's loss
    ours = local_loss(recipe, "stage1", hf_folder(checkpoints / "0", recipe, tmp_path / "hf0"), 1, tmp_path / "local0")
    assert records[0]["loss"] == pytest.approx(ours, rel=1e-4)
    # The resumed step 2 on the checkpoint's weights, optimizer and data position: the local backend's loss
    ours = local_loss(recipe, "stage1", hf_folder(checkpoints / "1", recipe, tmp_path / "hf"), 2, tmp_path / "local")
    assert records[1]["loss"] == pytest.approx(ours, rel=1e-4)
    summary = json.loads((checkpoints.parent / SUMMARY).read_text())
    assert summary["steps"] == 3 and summary["backend"] == "nanotron" and summary["index"] == 0
    assert summary["first_loss"] == records[0]["loss"] and summary["final_loss"] == records[-1]["loss"]


@pytest.mark.parametrize("name", ["stage2", "stage3", "sft", "long"])
def test_chained_stage_starts_from_its_parent_with_the_local_backends_loss(engine_chain, name, tmp_path):
    _, recipe, _ = engine_chain
    plan = build_plan(recipe)
    stage = plan.stage(name)
    parent = Path(plan.stage(stage.init_from).final_checkpoint())
    records = logged(recipe, name)
    assert [r["step"] for r in records] == [1, 2] and all(r["kind"] == stage.kind for r in records)
    ours = local_loss(recipe, name, hf_folder(parent, recipe, tmp_path / "hf"), 1, tmp_path / "local")
    assert records[0]["loss"] == pytest.approx(ours, rel=1e-4)
    assert Path(stage.final_checkpoint()).is_dir()
    if name == "long":  # nanotron trained 1,024-token windows under the new RoPE base, and saved it
        config = json.loads((Path(stage.final_checkpoint()) / "model_config.json").read_text())
        assert config["rope_theta"] == 100_000.0 and config["max_position_embeddings"] == 1024
        assert records[0]["tokens"] == stage.global_batch * 1024


def test_a_saved_checkpoint_converts_tensor_for_tensor(engine_chain, tmp_path):
    import convert
    from safetensors.torch import load_file

    _, recipe, _ = engine_chain
    checkpoint = Path(build_plan(recipe).stage("sft").final_checkpoint())
    hf = hf_folder(checkpoint, recipe, tmp_path / "hf")
    assert convert.main(["hf-to-nanotron", str(hf), str(tmp_path / "back")]) == 0
    theirs = sorted((checkpoint / "model").rglob("*.safetensors"))
    assert len(theirs) == 4 * 6 + 2  # per layer: qkv, o, gate_up, down, 2 norms; embedding (tied), final norm
    for path in theirs:
        again = tmp_path / "back" / path.relative_to(checkpoint)
        a, b = load_file(path), load_file(again)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), path


def test_the_report_draws_a_nanotron_run(engine_chain):
    _, recipe, _ = engine_chain
    stages = find_stages(Path(build_plan(recipe).stage("stage1").checkpoints_path).parents[1])
    # preference: TRL under torchrun; long: the context extension, off stage3, its kind from the job's settings
    assert [s.name for s in stages] == ["stage1", "stage2", "stage3", "sft", "preference", "long"]
    assert all(s.finished for s in stages) and stages[-1].kind == "long_context"


# ---------------------------------------------------------------------------------------------
# The local backend sees the engine's batches, sample for sample


def engine_batches(config: Path, out: Path, count: int, nproc: int = 1) -> list[dict[str, np.ndarray]]:
    """The first `count` micro-batches of each rank, in the order rank 0 micro 0, rank 1 micro 0, ..."""
    done = torchrun(str(SHIMS / "dump_batches.py"), str(config), str(out), str(count), nproc=nproc)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [np.load(f"{out}-rank{r}.npz") for r in range(nproc)]
    return [{k: ranks[r][f"{k}_{i}"] for k in ("input_ids", "input_mask", "label_ids", "label_mask")}
            for i in range(count) for r in range(nproc)]


def local_batches(recipe, name: str, count: int, out: Path) -> list[dict[str, torch.Tensor]]:

    from smolrecipe.backends.local.model import build_model
    from smolrecipe.backends.local.train import build_trainer
    from smolrecipe.data.tokenizer import load_tokenizer

    stage = build_plan(recipe).stage(name)
    tokenizer = load_tokenizer(recipe.tokenizer.path)
    dataset, collate = kind_of(stage.kind).local_data(recipe, stage, tokenizer)
    trainer, _ = build_trainer(recipe, stage, build_model(recipe), dataset, collate, tokenizer, out, [])
    return list(islice(trainer.get_train_dataloader(), count))


def assert_same_batches(engine: list[dict[str, np.ndarray]], local: list[dict[str, torch.Tensor]]) -> None:
    assert len(engine) == len(local)
    for ours, theirs in zip(local, engine, strict=True):
        # the local backend cuts SFT batches after their last label: what it cuts is never scored
        width = ours["input_ids"].shape[1]
        assert not theirs["label_mask"][:, width:].any()
        theirs = {key: value[:, :width] for key, value in theirs.items()}
        assert np.array_equal(ours["input_ids"].numpy(), theirs["input_ids"])
        assert np.array_equal(ours["attention_mask"].numpy().astype(bool), theirs["input_mask"])
        labels = np.where(theirs["label_mask"], theirs["label_ids"], IGNORE_INDEX)
        assert np.array_equal(ours["labels"].numpy(), labels)
        assert "position_ids" not in ours  # both run positions 0..seq-1 along the window


@pytest.mark.parametrize("name,dp", [("stage2", 1), ("stage2", 2), ("sft", 1)])
def test_local_backend_trains_on_the_engines_batches(engine_chain, name, dp, tmp_path):
    """stage2 blends three domains with stage-1 replay; with dp=2 the ranks' micro-batches interleave
    (nanotron's MegatronPretrainingSampler) into the one process's sequence."""
    _, recipe, _ = engine_chain
    stage = build_plan(recipe).stage(name)
    config = yaml.safe_load((Path(stage.checkpoints_path).parent / "config.yaml").read_text())
    config["parallelism"]["dp"] = dp
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    count = stage.grad_accumulation * stage.train_steps // dp  # the stage's micro-batches, per rank
    engine = engine_batches(path, tmp_path / "batches", count, nproc=dp)
    local = local_batches(recipe, name, count * dp, tmp_path / "local")
    assert_same_batches(engine, local)
    if not stage.reads_sources:  # SFT rows
        assert all(b["label_mask"].sum() < b["input_mask"].sum() for b in engine)  # no loss on prompts
        assert all(not b["label_mask"][:, -1].any() for b in engine)  # right padding
    else:
        assert any((~b["label_mask"]).any() for b in engine)  # document starts are not predicted
        assert all(b["input_ids"].shape[1] == stage.sequence_length for b in local)  # full windows


def test_preference_is_trained_by_trl_from_the_converted_sft_checkpoint(engine_chain):
    """The preference job on the cluster path: nanotron's final SFT checkpoint converted once to a
    transformers folder, TRL's DPOTrainer under torchrun from it, with the SFT model as the reference:
    the first step's loss is then exactly DPO's ln 2 (policy and reference agree)."""
    from smolrecipe.backends import backend

    _, recipe, _ = engine_chain
    plan = build_plan(recipe)
    stage = plan.stage("preference")
    run_dir = Path(stage.checkpoints_path).parent
    records = read_log(run_dir / LOG)[0]
    assert [r["step"] for r in records] == [1, 2] and all(r["kind"] == "preference" for r in records)
    assert records[0]["loss"] == pytest.approx(np.log(2), abs=1e-4)
    assert [r["lr"] for r in records] == pytest.approx(stage_lrs(stage), rel=1e-9)
    summary = json.loads((run_dir / SUMMARY).read_text())
    assert summary["steps"] == 2 and summary["init_from"] == str(run_dir / "init")
    init = json.loads((run_dir / "init.json").read_text())
    assert init["source"] == plan.stage("sft").final_checkpoint()
    final = backend("nanotron").final_checkpoint(recipe, stage, "RECIPE")
    assert final == run_dir / "checkpoint-2" and (final / "model.safetensors").is_file()
    assert (final / "chat_template.jinja").is_file()
    # the stage folder is found by the report like any nanotron stage, in training order
    assert [s.name for s in find_stages(Path(stage.checkpoints_path).parent.parent)][-2:] == ["preference", "long"]
