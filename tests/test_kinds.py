"""Stage kinds: the recipe's kinds and the behaviour registry agree, and the shared code picks the
right behaviour for each stage through them."""

import pytest

from smolrecipe.backends.nanotron import schema as ns
from smolrecipe.backends.nanotron.config import render_stage
from smolrecipe.errors import UserError
from smolrecipe.kinds import KINDS, base_and_chat, is_chat_model, kind_for_nanotron_dataset, kind_of
from smolrecipe.recipe.loading import load_recipe
from smolrecipe.recipe.plan import build_plan
from smolrecipe.recipe.schema import STAGE_KINDS
from smolrecipe.runs import StageLog


def test_every_recipe_kind_has_its_behaviour_and_back():
    assert set(KINDS) == set(STAGE_KINDS)
    for name, kind in KINDS.items():
        assert kind.name == name
        assert STAGE_KINDS[name].model_fields["kind"].annotation.__args__ == (name,)


@pytest.mark.parametrize("recipe_name", ["tiny", "llama500m"])
def test_each_stage_renders_the_dataset_section_of_its_kind(root, recipe_name):
    plan = build_plan(load_recipe(root / "recipes" / f"{recipe_name}.yaml"))
    assert [s.kind for s in plan.stages][:5] == ["pretrain", "pretrain", "pretrain", "sft", "preference"]
    assert [s.kind for s in plan.stages][5:] == ["long_context"]  # both: the extension to 1,024 / 16,384 tokens
    for stage in plan.stages:
        config = render_stage(plan, stage)
        if KINDS[stage.kind].engine == "trl":  # not a nanotron config: test_trl_stage_renders_what_trl_accepts
            assert config["engine"] == "trl" and stage.dataset is not None and not stage.reads_sources
            continue
        parsed_as = ns.resolved_classes(config)["data_stages[0].data.dataset"]
        # nanotron parses it as the class the kind declares, and our entry point finds the kind back from it
        assert parsed_as == KINDS[stage.kind].nanotron_dataset_class
        # (the pretraining kinds, anneal and long_context, train the same rows: their config sets them apart)
        assert kind_for_nanotron_dataset(parsed_as).engine_data.__func__ is KINDS[stage.kind].engine_data.__func__
        reads_sources, own_dataset = {"sft": (False, True)}.get(stage.kind, (True, False))
        assert stage.reads_sources == reads_sources and (stage.dataset is not None) == own_dataset


def test_unknown_kinds_are_one_line_errors():
    with pytest.raises(UserError, match="unknown stage kind 'dpo'"):
        kind_of("dpo")
    with pytest.raises(UserError, match="not a dataset section of any stage kind"):
        kind_for_nanotron_dataset("PretrainDatasetsArgs")
    assert not is_chat_model("?") and not is_chat_model(None) and is_chat_model("sft") and is_chat_model("preference")
    with pytest.raises(UserError, match=r"kinds nanotron trains: pretrain, anneal, long_context, sft\)$"):
        kind_for_nanotron_dataset("")  # the preference kind declares no nanotron dataset class


def _logs(*kinds):
    return [StageLog(name=f"s{i}-{kind}", folder=None, records=[], summary={"kind": kind}) for i, kind in enumerate(kinds)]


def test_base_and_chat_model():
    stages = _logs("pretrain", "pretrain", "sft", "pretrain")
    assert [s.name if s else None for s in base_and_chat(stages)] == ["s1-pretrain", "s2-sft"]
    assert [s.name if s else None for s in base_and_chat(_logs("pretrain"))] == ["s0-pretrain", None]
    assert base_and_chat(_logs("sft")) == (None, _logs("sft")[0])
    assert base_and_chat([]) == (None, None)
    # after SFT, a preference stage is a chat model too: the SFT model stays "the chat model" compared with the base
    assert [s.name for s in base_and_chat(_logs("pretrain", "sft", "preference"))] == ["s0-pretrain", "s1-sft"]
