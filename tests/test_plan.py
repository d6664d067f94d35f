"""The recipe math: steps from budgets, weights from shares and replay, decay lengths."""

from decimal import Decimal

import pytest
from conftest import step_tokens

from smolrecipe.errors import UserError
from smolrecipe.recipe.loading import recipe_from_dict
from smolrecipe.recipe.plan import build_plan, rounded_weights, steps_for
from smolrecipe.recipe.schema import parse_count


def test_steps_round_budget_up_to_whole_batches():
    assert steps_for(14_024_704_000, None, 262_144) == (53_500, 14_024_704_000)
    assert steps_for(14_000_000_000, None, 262_144) == (53_406, 14_000_000_000)
    assert steps_for(None, 5000, 16_384) == (5000, 81_920_000)


@pytest.mark.parametrize("text,value", [("14.0B", 14_000_000_000), ("512k", 512_000), ("6B", 6 * 10**9),
                                        ("1_024", 1024), (2048, 2048), ("1,000", 1000)])
def test_parse_count(text, value):
    assert parse_count(text) == value


def test_human_budget_in_recipe(tiny_dict):
    tiny_dict["stages"][0]["tokens"] = "64k"
    plan = build_plan(recipe_from_dict(tiny_dict))
    assert step_tokens(tiny_dict) == 2048
    assert plan.stage("stage1").train_steps == 32  # 64,000 / 2,048 rounded up
    assert plan.stage("stage1").tokens == 32 * 2048


def test_replay_of_a_stage_that_itself_replays(tiny_dict):
    # stage3 replays stage2, which replays stage1: weights nest
    tiny_dict["stages"][2]["replay"] = {"from": "stage2", "fraction": 0.5}
    recipe = recipe_from_dict(tiny_dict)
    w2 = recipe.stages[1].mixture_weights(recipe)
    w3 = recipe.stages[2].mixture_weights(recipe)
    assert sum(w2.values()) == Decimal(1) and sum(w3.values()) == Decimal(1)
    # arithmetic: 0.5 x 0.16 (own share) + 0.5 x stage2's 0.84 x 0.25
    assert w3["arithmetic"] == Decimal("0.5") * Decimal("0.16") + Decimal("0.5") * Decimal("0.84") * Decimal("0.25")


def test_rounded_weights_sum_to_exactly_one():
    thirds = {"a": Decimal(1) / 3, "b": Decimal(1) / 3, "c": Decimal(1) / 3}
    rounded = rounded_weights(thirds)
    assert sum(Decimal(str(v)) for v in rounded.values()) == Decimal(1)
    assert sorted(rounded.values()) == [0.333333, 0.333333, 0.333334]


def test_tokens_per_domain_add_up(root):
    from smolrecipe.recipe.loading import load_recipe

    plan = build_plan(load_recipe(root / "recipes" / "llama500m.yaml"))
    for stage in plan.stages:
        if stage.kind == "pretrain":
            assert sum(stage.tokens_by("domain").values()) == pytest.approx(stage.tokens, rel=1e-6)


def test_wsd_decay_start(tiny_dict):
    tiny_dict["stages"][0]["lr"]["decay_starting_step"] = 24
    plan = build_plan(recipe_from_dict(tiny_dict))
    stage = plan.stage("stage1")
    assert stage.lr_decay_steps == stage.train_steps - 24 and stage.train_steps > 24


def test_steps_and_tokens_are_exclusive(tiny_dict):
    tiny_dict["stages"][0]["steps"] = 10
    with pytest.raises(UserError, match=r"stages\[0\].tokens: give exactly one of"):
        recipe_from_dict(tiny_dict)


def test_first_stage_cannot_init_from_anything(tiny_dict):
    tiny_dict["stages"][0]["init_from"] = "stage2"
    with pytest.raises(UserError, match=r"stages\[0\].init_from: 'stage2' is this stage itself or a later stage"):
        recipe_from_dict(tiny_dict)


def test_later_stage_must_say_where_it_starts(tiny_dict):
    del tiny_dict["stages"][1]["init_from"]
    with pytest.raises(UserError, match=r"add `init_from: stage1`"):
        recipe_from_dict(tiny_dict)


def test_hash_ignores_comments_and_key_order(tiny_dict):
    a = recipe_from_dict(tiny_dict).hash()
    reordered = dict(reversed(list(tiny_dict.items())))
    assert recipe_from_dict(reordered).hash() == a
    tiny_dict["stages"][0]["lr"]["peak"] = 1e-3
    assert recipe_from_dict(tiny_dict).hash() != a
