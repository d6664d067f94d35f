"""The cost of the whole run before it starts: FLOPs, GPU-hours, wall-clock, disk (issue 16, item 8)."""

import pytest
from conftest import base_tokenizer

from smolrecipe.recipe.budgets import source_budgets
from smolrecipe.recipe.estimates import (
    ASSUMED_MFU,
    checkpoint_bytes,
    checkpoints_saved,
    count_params,
    flops_per_token,
    gpu_key,
    matmul_params,
    peak_tflops,
    run_cost,
    token_bytes,
)
from smolrecipe.recipe.loading import load_recipe, recipe_from_dict
from smolrecipe.recipe.plan import build_plan
from smolrecipe.report.preflight import cost_lines, human, size

# A shape small enough to multiply out by hand: 2 layers, hidden 8, 2 of 4 heads for KV (kv size 4),
# SwiGLU 16, vocabulary 100, sequence 32. A trained tokenizer has more entries than 100 (the byte
# alphabet alone is 256), so these shapes take a `base` tokenizer, which is only counted once built.
SMALL = {"num_layers": 2, "hidden_size": 8, "intermediate_size": 16, "num_attention_heads": 4,
         "num_key_value_heads": 2, "vocab_size": 100}


@pytest.fixture(scope="module")
def reference(root):
    return load_recipe(root / "recipes" / "llama500m.yaml")


@pytest.fixture
def small(tiny_dict):
    def make(**changes):
        base_tokenizer(tiny_dict, "HuggingFaceTB/SmolLM2-135M-Instruct")
        tiny_dict["model"].update(SMALL)
        tiny_dict["training"]["sequence_length"] = 32
        for section, values in changes.items():
            tiny_dict[section].update(values)
        return recipe_from_dict(tiny_dict)

    return make


def test_flops_per_token_by_hand(small):
    recipe = small()
    # per layer: q, o 8x8 each; k, v 8x4 each; gate, up, down 8x16 each = 128 + 64 + 384 = 576
    # x 2 layers = 1,152, + lm_head 100 x 8 = 800 (tied or not, it is a matmul): N = 1,952
    assert matmul_params(recipe) == 1_952
    f = flops_per_token(recipe)
    assert f.dense == 6 * 1_952 == 11_712
    assert f.attention == 12 * 2 * 32 * 8 == 6_144  # QK^T and AV, forward + backward, no causal halving
    assert f.total == 17_856


def test_the_untied_head_costs_the_same_flops(small):
    # The embedding lookup is free; the vocabulary projection is one matmul whether tied or not.
    assert flops_per_token(small(model={"tie_word_embeddings": False})) == flops_per_token(small())


def test_reference_flops_per_token(reference):
    # 32 x (2 x 1024^2 + 2 x 1024 x 256 + 3 x 1024 x 2816) + 128,256 x 1024
    assert matmul_params(reference) == 32 * 11_272_192 + 131_334_144 == 492_044_288
    assert flops_per_token(reference).attention == 12 * 32 * 1024 * 1024


def test_gpu_hours_and_wall_clock(reference):
    plan = build_plan(reference)
    cost = run_cost(plan)
    per_token = 6 * 492_044_288 + 12 * 32 * 1024 * 1024  # 3,354,918,912
    assert cost.peak_tflops == 312.0 and cost.mfu == ASSUMED_MFU == 0.30 and cost.gpus == 4
    stage1 = cost.stages[0]
    assert stage1.tokens == 53_500 * 262_144
    assert stage1.flops == pytest.approx(53_500 * 262_144 * per_token)  # 4.705e19
    # 4.705e19 FLOPs / (312e12 x 0.30 FLOP/s) = 502,690 s = 139.6 GPU-hours; 4 GPUs: 34.9 h
    assert stage1.gpu_hours == pytest.approx(4.7051745e19 / (312e12 * 0.30) / 3600, rel=1e-6)
    assert stage1.gpu_hours == pytest.approx(139.64, abs=0.01)
    assert stage1.wall_hours == pytest.approx(139.64 / 4, abs=0.01)
    sft, preference = cost.stages[3:5]
    assert sft.tokens == 5000 * 16 * 1024  # the SFT stage counts its own steps x tokens per step
    # DPO: 128 pairs x 1,024 tokens per step, each pair two sequences through the policy (6N) and the reference (2N)
    assert preference.tokens == 900 * 128 * 1024
    assert preference.flops == pytest.approx(preference.tokens * per_token * 2 * 8 / 6)
    # the context extension: 3,815 steps of 16 windows of 16,384 tokens; attention's FLOPs at that window
    long = cost.stages[5]
    assert long.tokens == 3815 * 16 * 16_384 and long.flops == pytest.approx(long.tokens * (6 * 492_044_288 + 12 * 32 * 16_384 * 1024))
    assert cost.flops == pytest.approx(sum(s.tokens for s in plan.stages[:4]) * per_token + preference.flops + long.flops)
    assert long.gpu_hours == pytest.approx(27.9, abs=0.05)
    assert cost.gpu_hours == pytest.approx(239.57 + 3.13 + long.gpu_hours, abs=0.01)
    assert cost.wall_hours == pytest.approx(cost.gpu_hours / 4)
    # a faster GPU, the same FLOPs
    h100 = run_cost(build_plan(reference.model_copy(update={"cluster": reference.cluster.model_copy(
        update={"gpu_name": "NVIDIA H100 80GB HBM3"})})))
    assert h100.peak_tflops is None  # "H100 HBM3" is not a name in the table: no guess
    h100 = run_cost(build_plan(reference.model_copy(update={"cluster": reference.cluster.model_copy(
        update={"gpu_name": "H100-SXM5-80GB"})})))
    assert h100.flops == cost.flops and h100.gpu_hours == pytest.approx(cost.gpu_hours * 312 / 989)


def test_gpu_names():
    assert gpu_key("NVIDIA A100-SXM4-80GB") == "A100 SXM4"
    assert gpu_key("h100 pcie") == "H100 PCIE"


def test_cpu_and_unknown_gpus_get_no_gpu_hours(root, tiny_dict):
    tiny = load_recipe(root / "recipes" / "tiny.yaml")
    assert peak_tflops(tiny) is None and run_cost(build_plan(tiny)).gpu_hours is None
    tiny_dict["cluster"].update(gpus_per_node=1, gpu_name="Imaginary X9")
    plan = build_plan(recipe_from_dict(tiny_dict))
    cost = run_cost(plan)
    assert cost.gpu_hours is None and cost.flops > 0
    note = cost_lines(plan, cost, source_budgets(plan))[-1]
    assert note.startswith("note: no GPU-hours: cluster.gpu_name 'Imaginary X9'") and "'A100'" in note


def test_checkpoints_kept():
    # nanotron saves every multiple of the interval and the last step (the same folder when it is one)
    assert checkpoints_saved(53_500, 1000) == 54
    assert checkpoints_saved(5_000, 1000) == 5
    assert checkpoints_saved(999, 1000) == 1


def test_checkpoint_disk(reference, small):
    params = count_params(reference).total
    assert params == 492_044_288 + 32 * 2 * 1024 + 1024  # matmul weights + RMSNorms; the tied embedding once
    weights, optimizer = checkpoint_bytes(reference)
    assert weights == 2 * params  # bf16
    assert optimizer == 12 * params  # fp32 exp_avg + exp_avg_sq + the accumulator's fp32 master weights
    cost = run_cost(build_plan(reference))
    assert cost.checkpoints == 54 + 23 + 16 + 5 + 1 + 4  # long: 3,815 steps; the preference stage's 900 steps: its last
    assert cost.checkpoints * cost.checkpoint_size == 103 * 14 * params  # 710 GB
    # float32 weights (which nanotron only trains without fp32 accumulation): 4 + 4 + 4 bytes
    recipe = small(model={"dtype": "float32"}, training={"optimizer": {"accumulate_grad_in_fp32": False}})
    assert checkpoint_bytes(recipe) == (4 * count_params(recipe).total, 8 * count_params(recipe).total)


def test_token_bytes_follow_datatrove(reference, small):
    assert token_bytes(reference) == 4  # 128,256 entries do not fit uint16
    assert token_bytes(small(model={"vocab_size": 65_536})) == 2
    assert token_bytes(small(model={"vocab_size": 65_537})) == 4


def test_preflight_prints_budgets_and_cost(root, reference, tmp_path, monkeypatch, capsys):
    import make_config

    monkeypatch.setenv("SCRATCH", str(tmp_path / "scratch"))
    assert make_config.main([str(root / "recipes" / "llama500m.yaml"), "--out", str(tmp_path / "configs")]) == 0
    out = capsys.readouterr().out
    budgets = source_budgets(build_plan(reference))
    total = sum(b.budget for b in budgets.values())
    assert "data budgets" in out
    rows = {line.split("│")[1].strip(): line for line in out[out.index("data budgets"):out.index("cost: ")].splitlines()
            if line.count("│") > 5}
    for b in budgets.values():
        cells = [c.strip() for c in rows[b.source].split("│")[2:-1]]
        assert cells[-5:] == [human(b.drawn), human(b.budget), "plan", f"{b.epochs:.2f}", size(b.budget * 4)]
    # cosmopedia: 52% of stage1's web, 0.5 x 52% + 16% replay in stage2, 68% x 44% + 0.8% replay in stage3
    assert rows["cosmopedia"].split("│")[2].strip() == "7.29B" and "11.00B" in rows["cosmopedia"]  # cosmopedia feeds long too
    assert f"{total / 1e9:.2f}B tokens x 4 B = {total * 4 / 1e9:.3g} GB" in out
    table = out[out.index("cost: "):out.index("disk, prepared data")]
    lines = {line.split("│")[1].strip(): line for line in table.splitlines() if line.count("│") > 5}
    assert "4.71e+19" in lines["stage1"] and "139.6" in lines["stage1"] and "34.9 h" in lines["stage1"]
    assert "9.12e+19" in lines["total"] and "270.6" in lines["total"] and "67.6 h (2.8 d)" in lines["total"]
    assert "A100 at 312 TFLOP/s dense bf16 x assumed MFU 30%" in out
    assert "103 checkpoint folders, preference's transformers ones" in out and "x 6.89 GB" in out and "= 710 GB" in out
