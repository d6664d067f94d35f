"""Mid-training: the anneal and long_context stage kinds, needle sources and the min_tokens filter.

What the recipe checks, what the plan derives (each stage's window, RoPE base and LR), what the
nanotron configs say, and that the LR of an annealing stage continues its stable parent's.
"""

from __future__ import annotations

import copy

import pytest
from conftest import ROOT

import smolrecipe.backends.nanotron.schema as ns
from smolrecipe.backends.lr_schedule import stage_lrs
from smolrecipe.backends.nanotron.config import render_stage
from smolrecipe.errors import UserError
from smolrecipe.recipe.loading import load_recipe
from smolrecipe.recipe.plan import build_plan
from smolrecipe.recipe.schema import Recipe


def _tiny(tiny_dict) -> dict:
    return copy.deepcopy(tiny_dict)


def _stage(data: dict, name: str) -> dict:
    return next(s for s in data["stages"] if s["name"] == name)


def _error(data: dict) -> UserError:
    with pytest.raises(UserError) as exc:
        Recipe.model_validate(data)
    return exc.value


# ---------------------------------------------------------------------------------------------
# Context extension: windows and RoPE base along the chain


def test_the_tiny_extension_trains_longer_windows_under_a_larger_base():
    plan = build_plan(load_recipe(ROOT / "recipes" / "tiny.yaml"))
    long, stage3 = plan.stage("long"), plan.stage("stage3")
    assert (stage3.sequence_length, stage3.rope_theta, stage3.max_position) == (128, 10_000.0, 128)
    assert (long.sequence_length, long.rope_theta, long.max_position) == (1024, 100_000.0, 1024)
    assert long.tokens_per_step == 2 * 2 * 1024 and long.train_steps == 200
    config = render_stage(plan, long)
    assert config["tokens"]["sequence_length"] == 1024
    model = config["model"]["model_config"]
    assert model["rope_theta"] == 100_000.0 and model["max_position_embeddings"] == 1024
    assert render_stage(plan, stage3)["model"]["model_config"]["rope_theta"] == 10_000.0
    assert ns.resolved_classes(config)["data_stages[0].data.dataset"] == "NanosetDatasetsArgs"  # nanotron's schema


def test_the_reference_extension_renders_16k_at_rope_500k():
    plan = build_plan(load_recipe(ROOT / "recipes" / "llama500m.yaml"))
    long = plan.stage("long")
    config = render_stage(plan, long)
    assert config["tokens"]["sequence_length"] == 16_384 and config["tokens"]["micro_batch_size"] == 1
    assert config["model"]["model_config"]["rope_theta"] == 500_000.0
    assert config["model"]["model_config"]["max_position_embeddings"] == 16_384
    assert long.tokens_per_step == 262_144 == plan.stage("stage3").tokens_per_step
    shares = {fw.source: fw.weight for fw in long.weights}
    assert shares["slimpajama_long"] == pytest.approx(0.408) and shares["needles"] == pytest.approx(0.0204)


def test_stages_after_an_extension_keep_its_base_and_their_own_windows(tiny_dict):
    data = _tiny(tiny_dict)
    long = data["stages"].pop()  # the extension, moved before SFT, which then starts from it
    data["stages"].insert(3, long)
    _stage(data, "sft")["init_from"] = "long"
    plan = build_plan(Recipe.model_validate(data))
    sft = plan.stage("sft")
    assert (sft.sequence_length, sft.rope_theta, sft.max_position) == (128, 100_000.0, 1024)
    model = render_stage(plan, sft)["model"]["model_config"]
    assert model["rope_theta"] == 100_000.0 and model["max_position_embeddings"] == 1024
    assert plan.stage("preference").rope_theta == 100_000.0  # preference starts from sft


@pytest.mark.parametrize("change,field,fix", [
    (lambda s: s.update(sequence_length=128), "stages[5].sequence_length", "extend it, e.g. to 512"),
    (lambda s: s.update(rope_theta=5000.0), "stages[5].rope_theta", "raise it with the length"),
    (lambda s: s.pop("init_from"), "stages[5].init_from", "add `init_from: preference`"),
])
def test_a_context_extension_must_extend(tiny_dict, change, field, fix):
    data = _tiny(tiny_dict)
    change(_stage(data, "long"))
    err = _error(data)
    assert err.field == field and fix in err.fix


# ---------------------------------------------------------------------------------------------
# Needle sources and the length filter


def test_needle_documents_must_fit_the_windows_of_the_stages_that_read_them(tiny_dict):
    data = _tiny(tiny_dict)
    data["sources"]["needles"]["needles"]["lengths"] = [256, 2048]
    err = _error(data)
    assert err.field == "stages[5].mixture.web.sources.needles" and "keep needles.lengths <= 1024" in err.fix


@pytest.mark.parametrize("haystack,problem", [("needles", "this source itself"), ("books", "not a source")])
def test_a_needle_source_needs_a_plain_haystack_source(tiny_dict, haystack, problem):
    data = _tiny(tiny_dict)
    data["sources"]["needles"]["needles"]["haystack"] = haystack
    err = _error(data)
    assert err.field == "sources.needles.needles.haystack" and problem in err.problem


def test_needle_sources_are_not_tokenizer_training_text(tiny_dict):
    data = _tiny(tiny_dict)
    data["tokenizer"]["train"]["sources"] = ["prose", "needles"]
    err = _error(data)
    assert err.field == "tokenizer.train.sources" and "train on its haystack source 'prose'" in err.fix


def test_min_tokens_counts_tokens_of_the_recipes_tokenizer(tiny_tokenizer):
    from datatrove.data import Document
    from tokenizers import Tokenizer

    from smolrecipe.data.sources import TokenLength
    from smolrecipe.recipe.filters import bad_filter_args

    tokenizer = Tokenizer.from_file(str(tiny_tokenizer / "tokenizer.json"))
    text = "The river flows past the mill and the market square. " * 20
    n = len(tokenizer.encode(text, add_special_tokens=False).ids)
    keep = TokenLength(min_tokens=n, tokenizer=str(tiny_tokenizer))
    assert keep.filter(Document(text=text, id="a")) is True
    assert keep.filter(Document(text=text[:-60], id="b")) == (False, "too_few_tokens")
    assert keep.filter(Document(text="short", id="c")) == (False, "too_few_tokens")  # fewer characters than tokens wanted
    at_most = TokenLength(min_tokens=1, max_tokens=n - 1, tokenizer=tokenizer)  # a tokenizers.Tokenizer works too
    assert at_most.filter(Document(text=text, id="d")) == (False, "too_many_tokens")
    assert bad_filter_args("min_tokens", {"min_tokens": 192}) is None and bad_filter_args("min_tokens", {"tokens": 1})


# ---------------------------------------------------------------------------------------------
# Annealing: warmup-stable-decay across stages


def test_the_annealing_lr_continues_the_stable_stage():
    plan = build_plan(load_recipe(ROOT / "recipes" / "tiny_wsd.yaml"))
    stable = stage_lrs(plan.stage("stable"))
    assert stable[0] < stable[20] == stable[-1] == 3e-3  # linear warmup, then stable
    for arm in ("cooldown", "anneal"):
        lrs = stage_lrs(plan.stage(arm))
        assert lrs[0] == stable[-1]  # continuous at the boundary: no warmup, no jump
        assert all(a >= b for a, b in zip(lrs[:-1], lrs[1:], strict=True)) and lrs[-1] < 0.1 * lrs[0]  # decays to near zero
        assert plan.stage(arm).load_optimizer  # with the stable stage's AdamW moments
    assert set(stage_lrs(plan.stage("constant"))) == {3e-3}  # the control: no annealing


def test_annealing_stages_carry_their_parents_optimizer_and_their_own_mixture():
    plan = build_plan(load_recipe(ROOT / "recipes" / "tiny_wsd.yaml"))
    anneal = plan.stage("anneal")
    assert anneal.resume_checkpoint_path == plan.stage("stable").final_checkpoint() and not anneal.load_lr_scheduler
    assert render_stage(plan, anneal)["checkpoints"]["load_optimizer"] is True
    assert {fw.source: fw.weight for fw in anneal.weights} == {"prose": 0.4, "arithmetic": 0.3, "python_functions": 0.3}


def _wsd() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "recipes" / "tiny_wsd.yaml").read_text())


@pytest.mark.parametrize("change,field,fix", [
    (lambda d: _stage(d, "stable")["lr"].update(min=3e-4), "stages[0].lr.min", "make 'stable' stable (min: 0.003"),
    (lambda d: _stage(d, "anneal")["lr"].update(peak=2e-3), "stages[3].lr.peak", "set peak: 0.003"),
    (lambda d: _stage(d, "anneal")["lr"].update(warmup_steps=10), "stages[3].lr.warmup_steps", "set warmup_steps: 0"),
    (lambda d: _stage(d, "anneal")["lr"].update(min=3e-3), "stages[3].lr.min", "decay to (near) zero"),
    (lambda d: _stage(d, "anneal").update(load_optimizer=False), "stages[3].load_optimizer", "set load_optimizer: true"),
])
def test_an_annealing_stage_must_continue_a_stable_one(change, field, fix):
    data = _wsd()
    if field == "stages[0].lr.min":  # only the anneal arms check their parent
        _stage(data, "constant").update(kind="pretrain")
    change(data)
    err = _error(data)
    assert err.field == field and fix in err.fix, (err.field, err.fix)


def test_the_reference_wsd_variant_anneals_its_last_stage_over_a_sixth_of_the_tokens():
    plan = build_plan(load_recipe(ROOT / "recipes" / "llama500m_wsd.yaml"))
    reference = build_plan(load_recipe(ROOT / "recipes" / "llama500m.yaml"))
    stage1, stage2, stage3 = (stage_lrs(plan.stage(n)) for n in ("stage1", "stage2", "stage3"))
    assert stage1[100] == stage1[-1] == stage2[0] == stage2[-1] == stage3[0] == 3e-4  # one stable phase, no jump
    assert stage3[-1] < 1e-7 and plan.stage("stage3").kind == "anneal" and plan.stage("stage3").load_optimizer
    pretraining = sum(s.tokens for s in plan.stages if s.reads_sources)
    assert plan.stage("stage3").tokens / pretraining == pytest.approx(0.167, abs=0.001)
    for name in ("stage1", "stage2", "stage3"):  # the same data, read from the reference's folders
        assert plan.stage(name).weights == reference.stage(name).weights
        assert ns.resolved_classes(render_stage(plan, plan.stage(name)))["data_stages[0].data.dataset"] == "NanosetDatasetsArgs"
