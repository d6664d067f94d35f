"""Bad input: one line that names the field and the fix, and no file written."""


import make_config  # tools/ is on sys.path (conftest.py)
import pytest


def _unknown_top(d):
    d["trainig"] = {}


def _unknown_nested(d):
    d["training"]["optimiser"] = {"name": "adamw"}


def _missing(d):
    del d["model"]["hidden_size"]


def _domain_shares(d):
    d["stages"][1]["mixture"]["web"]["share"] = 0.6  # 0.6 + 0.25 + 0.25


def _source_shares(d):
    d["stages"][0]["mixture"]["web"]["sources"] = {"prose": 0.7, "forum": 0.2}


def _replay_later(d):
    d["stages"][1]["replay"]["from"] = "stage3"


def _negative_budget(d):
    d["stages"][0]["tokens"] = -1000


def _kv_heads(d):
    d["model"]["num_key_value_heads"] = 3


def _below_one_batch(d):
    d["stages"][2]["tokens"] = 1000  # one global batch is 16 x 128 = 2,048 tokens


def _replay_unknown(d):
    d["stages"][1]["replay"]["from"] = "stage9"


def _unknown_source(d):
    d["stages"][0]["mixture"]["web"]["sources"] = {"prose": 0.7, "blog": 0.3}


def _wrong_domain(d):
    d["stages"][1]["mixture"]["math"]["sources"] = {"python_functions": 1.0}


def _dp_vs_gpus(d):
    d["cluster"]["gpus_per_node"] = 4


def _warmup_too_long(d):
    d["stages"][2]["tokens"] = 8 * 2048
    d["stages"][2]["lr"]["warmup_steps"] = 8  # the stage has 8 steps


def _fp32_accumulation_of_fp32(d):
    d["training"]["optimizer"]["accumulate_grad_in_fp32"] = True  # the tiny model is float32


def _old_sft_section(d):
    d["sft"] = d["stages"].pop()  # the layout before stages had kinds
    del d["sft"]["kind"]


def _stage_without_kind(d):
    del d["stages"][1]["kind"]


def _unknown_kind(d):
    d["stages"][3]["kind"] = "dpo"


def _pretrain_field_in_sft_stage(d):
    d["stages"][3]["mixture"] = d["stages"][0]["mixture"]


def _sft_field_missing(d):
    del d["stages"][3]["data"]


def _sft_without_init_from(d):
    del d["stages"][3]["init_from"]


def _replay_of_sft(d):
    d["stages"].append({**d["stages"][2], "name": "stage4", "init_from": "sft", "replay": {"from": "sft", "fraction": 0.1}})


def _sft_named_like_source(d):
    d["stages"][3]["name"] = "prose"


def _preference_from_base(d):
    d["stages"][4]["init_from"] = "stage3"


def _loss_type_for_orpo(d):
    d["stages"][4].update(method="orpo", loss_type="sigmoid")


def _unknown_loss_type(d):
    d["stages"][4]["loss_type"] = "sigmoidd"


def _unknown_loss_in_a_list(d):
    d["stages"][4]["loss_type"] = ["sigmoid", "sftt"]


def _loss_weights_miscounted(d):
    d["stages"][4].update(loss_type=["sigmoid", "sft"], loss_weights=[1.0])


def _pairs_longer_than_context(d):
    d["stages"][4]["max_length"] = 4096


def _preference_carries_optimizer(d):
    d["stages"][4]["load_optimizer"] = True


def _unknown_method(d):
    d["stages"][4]["method"] = "kto"


def _pairs_without_origin(d):
    del d["stages"][4]["data"]["path"]


CASES = [
    (_preference_from_base, "stages[4].init_from", "start from an SFT stage: ['sft']"),
    (_loss_type_for_orpo, "stages[4].loss_type", "remove loss_type, or set method: dpo"),
    (_unknown_loss_type, "stages[4].loss_type", "did you mean 'sigmoid'?"),
    (_unknown_loss_in_a_list, "stages[4].loss_type", "did you mean 'sft'?"),
    (_loss_weights_miscounted, "stages[4].loss_weights", "give one weight per loss_type"),
    (_pairs_longer_than_context, "stages[4].max_length", "use at most 128"),
    (_preference_carries_optimizer, "stages[4].load_optimizer", "set it to false"),
    (_unknown_method, "stages[4].method", "'dpo'"),
    (_pairs_without_origin, "stages[4].data", "give exactly one of `hf`"),
    (_old_sft_section, "sft", "move the section to the end of `stages:` as `- kind: sft`"),
    (_stage_without_kind, "stages[1].kind", "add `kind:` with one of: pretrain, anneal, long_context, sft"),
    (_unknown_kind, "stages[3].kind", "use one of: pretrain, anneal, long_context, sft"),
    (_pretrain_field_in_sft_stage, "stages[3].mixture", "allowed here: name, kind, tokens, steps, lr, init_from"),
    (_sft_field_missing, "stages[3].data", "add `data:`"),
    (_sft_without_init_from, "stages[3].init_from", "add `init_from:`"),
    (_replay_of_sft, "stages[6].replay.from", "replay one of the earlier pretraining stages: ['stage1', 'stage2', 'stage3', 'long']"),
    (_sft_named_like_source, "stages[3].name", "rename the stage or the source"),
    (_unknown_top, "trainig", "remove it or correct the spelling"),
    (_unknown_nested, "training.optimiser", "allowed here:"),
    (_missing, "model.hidden_size", "add `hidden_size:`"),
    (_domain_shares, "stages[1].mixture", "add up to 1"),
    (_source_shares, "stages[0].mixture.web.sources", "add up to 1"),
    (_replay_later, "stages[1].replay.from", "use an earlier stage: ['stage1']"),
    (_replay_unknown, "stages[1].replay.from", "use an earlier stage"),
    (_negative_budget, "stages[0].tokens", "positive"),
    (_kv_heads, "model.num_key_value_heads", "use one of [1, 2, 4]"),
    (_below_one_batch, "stages[2].tokens", "at least 2048"),
    (_unknown_source, "stages[0].mixture.web.sources.blog", "define it under `sources:`"),
    (_wrong_domain, "stages[1].mixture.math.sources.python_functions", "move it under mixture.code"),
    (_dp_vs_gpus, "parallelism.dp", "set dp to 4"),
    (_warmup_too_long, "stages[2].lr.warmup_steps", "fewer warmup steps"),
    (_fp32_accumulation_of_fp32, "training.optimizer.accumulate_grad_in_fp32", "set accumulate_grad_in_fp32: false"),
]


@pytest.mark.parametrize("mutate,field,fix", CASES, ids=[c[0].__name__.strip("_") for c in CASES])
def test_bad_recipe_is_one_line_naming_field_and_fix(mutate, field, fix, tiny_dict, write_recipe, tmp_path, capsys):
    mutate(tiny_dict)
    out = tmp_path / "configs"
    code = make_config.main([str(write_recipe(tiny_dict)), "--out", str(out)])
    stderr = capsys.readouterr().err.strip()
    assert code == 2
    assert len(stderr.splitlines()) == 1, stderr
    assert f" {field}: " in stderr, stderr
    assert "fix:" in stderr and fix in stderr, stderr
    assert not out.exists(), "nothing may be written for a bad recipe"


def test_unset_environment_variable_in_path(tiny_dict, write_recipe, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SMOLRECIPE_SCRATCH_FOR_TEST", raising=False)
    tiny_dict["paths"]["runs"] = "${SMOLRECIPE_SCRATCH_FOR_TEST}/runs"
    out = tmp_path / "configs"
    code = make_config.main([str(write_recipe(tiny_dict)), "--resolve", "--out", str(out)])
    stderr = capsys.readouterr().err.strip()
    assert code == 2
    assert len(stderr.splitlines()) == 1, stderr
    assert "paths.runs: environment variable $SMOLRECIPE_SCRATCH_FOR_TEST is not set" in stderr
    assert "fix: export SMOLRECIPE_SCRATCH_FOR_TEST=" in stderr
    assert not out.exists()


def test_unset_variable_is_only_a_note_for_portable_configs(tiny_dict, write_recipe, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SMOLRECIPE_SCRATCH_FOR_TEST", raising=False)
    tiny_dict["paths"]["runs"] = "${SMOLRECIPE_SCRATCH_FOR_TEST}/runs"
    out = tmp_path / "configs"
    assert make_config.main([str(write_recipe(tiny_dict)), "--quiet", "--out", str(out)]) == 0
    assert "${SMOLRECIPE_SCRATCH_FOR_TEST}/runs/tiny/stage1/checkpoints" in (out / "stage1.yaml").read_text()
    assert "note: paths.runs uses $SMOLRECIPE_SCRATCH_FOR_TEST" in capsys.readouterr().out


def test_yaml_syntax_error_and_missing_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: [unclosed\n")
    assert make_config.main([str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert make_config.main([str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
