"""The committed reference configs carry the report's numbers (NTUA report, DESIGN.md)."""

import pytest
import yaml

from smolrecipe.recipe.loading import load_recipe


@pytest.fixture(scope="module")
def cfg(root):
    folder = root / "configs" / "llama500m"
    return {name: yaml.safe_load((folder / f"{name}.yaml").read_text()) for name in ("stage1", "stage2", "stage3", "sft")}


def _weights(config):
    ds = config["data_stages"][0]["data"]["dataset"]
    return {folder.rsplit("/", 1)[-1]: w for folder, w in zip(ds["dataset_folder"], ds["dataset_weights"], strict=True)}


def _lr(config):
    return config["optimizer"]["learning_rate_scheduler"]


def test_architecture(cfg):
    for config in cfg.values():
        mc = config["model"]["model_config"]
        assert mc["is_llama_config"] is True
        assert (mc["num_hidden_layers"], mc["hidden_size"], mc["intermediate_size"]) == (32, 1024, 2816)
        assert (mc["num_attention_heads"], mc["num_key_value_heads"]) == (16, 4)
        assert mc["rms_norm_eps"] == 1e-5 and mc["rope_theta"] == 10000.0 and mc["rope_interleaved"] is False
        assert mc["tie_word_embeddings"] is True and mc["vocab_size"] == 128256 and mc["hidden_act"] == "silu"
        assert mc["max_position_embeddings"] == 1024 and config["model"]["dtype"] == "bfloat16"


def test_batch_parallelism_and_optimizer(cfg):
    for name, config in cfg.items():
        t, p, o = config["tokens"], config["parallelism"], config["optimizer"]
        assert t["sequence_length"] == 1024 and p["dp"] == 4 and p["tp"] == 1 and p["pp"] == 1
        assert p["recompute_layer"] is True and o["zero_stage"] == 0
        assert o["optimizer_factory"]["adam_beta1"] == 0.9 and o["optimizer_factory"]["adam_beta2"] == 0.95
        assert o["optimizer_factory"]["adam_eps"] == 1e-8 and o["optimizer_factory"]["name"] == "adamW"
        assert o["weight_decay"] == 0.1 and o["clip_grad"] == 1.0 and o["accumulate_grad_in_fp32"] is True
        if name != "sft":
            assert (t["micro_batch_size"], t["batch_accumulation_per_replica"]) == (4, 16)
            assert t["micro_batch_size"] * t["batch_accumulation_per_replica"] * p["dp"] * t["sequence_length"] == 262_144


@pytest.mark.parametrize("stage,steps,billions,peak,warmup,minimum", [
    ("stage1", 53_500, 14.0, 3e-4, 100, 5e-5),
    ("stage2", 22_717, 6.0, 1.5e-4, 900, 1.5e-5),
    ("stage3", 15_260, 4.0, 5e-5, 1000, 5e-6),
])
def test_stage_budgets_and_schedules(cfg, stage, steps, billions, peak, warmup, minimum):
    config = cfg[stage]
    assert config["tokens"]["train_steps"] == steps
    assert round(steps * 262_144 / 1e9, 1) == billions
    lr = _lr(config)
    assert (lr["learning_rate"], lr["lr_warmup_steps"], lr["min_decay_lr"]) == (peak, warmup, minimum)
    assert lr["lr_decay_style"] == "cosine" and lr["lr_warmup_style"] == "linear"
    assert lr["lr_decay_steps"] == steps - warmup


def test_mixtures_and_replay(cfg, root):
    recipe = load_recipe(root / "recipes" / "llama500m.yaml")
    pretraining = [s for s in recipe.stages if s.kind == "pretrain"]
    shares = [{d: m.share for d, m in s.mixture.items()} for s in pretraining]
    assert shares == [{"web": 1.0}, {"web": 0.5, "math": 0.25, "code": 0.25}, {"web": 0.68, "math": 0.16, "code": 0.16}]
    assert [s.replay and (s.replay.from_, s.replay.fraction) for s in pretraining] == [
        None, ("stage1", 0.16), ("stage1", 0.008)]
    web = {"cosmopedia": 0.52, "slimpajama": 0.25, "fineweb_edu": 0.17, "stackexchange": 0.06}
    assert _weights(cfg["stage1"]) == web
    w2 = _weights(cfg["stage2"])
    # 84% follows 50/25/25, 16% replays stage 1 (all web, same source shares)
    assert w2["openmathreasoning"] == pytest.approx(0.84 * 0.25) and w2["starcoder_python"] == pytest.approx(0.21)
    for source, share in web.items():
        assert w2[source] == pytest.approx(0.84 * 0.5 * share + 0.16 * share, abs=1e-6)
    w3 = _weights(cfg["stage3"])
    assert w3["openmathreasoning"] == pytest.approx(0.992 * 0.16, abs=1e-6)
    assert w3["stackexchange"] == pytest.approx(0.992 * 0.68 * 0.17 + 0.008 * 0.06, abs=1e-6)
    assert w3["stackexchange"] > w2["stackexchange"]  # more Stack Exchange in stage 3
    for config in (cfg["stage1"], cfg["stage2"], cfg["stage3"]):
        assert sum(_weights(config).values()) == pytest.approx(1.0, abs=1e-9)


def test_resume_chain(cfg):
    ck = {name: c["checkpoints"] for name, c in cfg.items()}
    assert ck["stage1"]["resume_checkpoint_path"] == ck["stage1"]["checkpoints_path"]  # a requeued job resumes itself
    assert ck["stage1"]["load_lr_scheduler"] is True
    for stage, parent, steps in (("stage2", "stage1", 53_500), ("stage3", "stage2", 22_717), ("sft", "stage3", 15_260)):
        assert ck[stage]["resume_checkpoint_path"] == f"{ck[parent]['checkpoints_path']}/{steps}"
        assert ck[stage]["load_lr_scheduler"] is False
        assert ck[stage]["load_optimizer"] is False
    assert "${SCRATCH}" in ck["stage1"]["checkpoints_path"]


def test_sft(cfg):
    sft = cfg["sft"]
    t = sft["tokens"]
    assert t["train_steps"] == 5000
    assert t["micro_batch_size"] * t["batch_accumulation_per_replica"] * sft["parallelism"]["dp"] == 16
    assert 16 * t["sequence_length"] == 16_384
    lr = _lr(sft)
    assert (lr["learning_rate"], lr["lr_warmup_steps"], lr["min_decay_lr"], lr["lr_decay_style"]) == (1e-5, 200, 0.0, "cosine")
    assert lr["lr_decay_steps"] == 4800
    dataset = sft["data_stages"][0]["data"]["dataset"]
    assert dataset["hf_dataset_or_datasets"].endswith("/llama500m/sft") and dataset["sft_dataloader"] is True
