"""Generated configs against nanotron's schema at the pinned commit, written down in
smolrecipe.backends.nanotron.schema from reading nanotron's source (field names, types, union order,
__post_init__ rules). Runs everywhere; test_nanotron_parser.py runs nanotron itself where it can."""

import copy
import re

import pytest

from smolrecipe.backends.nanotron import schema as ns
from smolrecipe.backends.nanotron.config import NANOTRON_COMMIT, render_stage
from smolrecipe.kinds import kind_of
from smolrecipe.recipe.loading import load_recipe
from smolrecipe.recipe.plan import build_plan


def _configs(root, name):
    plan = build_plan(load_recipe(root / "recipes" / f"{name}.yaml"))
    return {s.name: render_stage(plan, s) for s in plan.stages if kind_of(s.kind).engine == "nanotron"}


@pytest.fixture(scope="module")
def reference(root):
    return _configs(root, "llama500m")


@pytest.mark.parametrize("name", ["llama500m", "tiny"])
def test_every_config_passes_the_schema(root, name):
    for stage, config in _configs(root, name).items():
        assert ns.check_config(config) == [], stage


SECTIONS = {
    ("general",): ns.GENERAL, ("parallelism",): ns.PARALLELISM, ("model",): ns.MODEL,
    ("model", "model_config"): ns.LLAMA, ("model", "init_method"): ns.RANDOM_INIT, ("tokenizer",): ns.TOKENIZER,
    ("checkpoints",): ns.CHECKPOINTS, ("logging",): ns.LOGGING, ("tokens",): ns.TOKENS,
    ("optimizer",): ns.OPTIMIZER, ("optimizer", "optimizer_factory"): ns.ADAMW,
    ("optimizer", "learning_rate_scheduler"): ns.LR_SCHEDULER,
}


def test_field_names_are_exactly_nanotrons(reference):
    """Every section is written out in full, with exactly the fields of nanotron's dataclass."""
    for stage, config in reference.items():
        assert list(config) == list(ns.CONFIG.fields), stage
        for path, section in SECTIONS.items():
            node = config
            for key in path:
                node = node[key]
            assert list(node) == list(section.fields), (stage, path)
        data_stage = config["data_stages"][0]
        assert list(data_stage) == list(ns.DATA_STAGE.fields)
        assert list(data_stage["data"]) == list(ns.DATA.fields)
        dataset_section = ns.SFT_DATASET if stage == "sft" else ns.NANOSET_DATASET
        assert list(data_stage["data"]["dataset"]) == list(dataset_section.fields), stage


def test_unions_resolve_to_the_intended_classes(reference):
    for stage, config in reference.items():
        classes = ns.resolved_classes(config)
        assert classes["model.model_config"] == "LlamaConfig"
        assert classes["model.init_method"] == "RandomInit"
        assert classes["optimizer.optimizer_factory"] == "AdamWOptimizerArgs"
        expected = "SFTDatasetsArgs" if stage == "sft" else "NanosetDatasetsArgs"
        assert classes["data_stages[0].data.dataset"] == expected, stage


def test_post_init_rules_hold(reference):
    for stage, config in reference.items():
        ds = config["data_stages"]
        assert [s["start_training_step"] for s in ds] == [1]
        assert len({s["name"] for s in ds}) == len(ds)
        mc = config["model"]["model_config"]
        assert mc["num_attention_heads"] % mc["num_key_value_heads"] == 0
        assert mc["num_attention_heads"] % config["parallelism"]["tp"] == 0
        assert mc["num_key_value_heads"] >= config["parallelism"]["tp"]
        dataset = ds[0]["data"]["dataset"]
        if stage != "sft":
            assert len(dataset["dataset_weights"]) == len(dataset["dataset_folder"])
        lr = config["optimizer"]["learning_rate_scheduler"]
        assert lr["lr_warmup_style"] in ("linear", "constant") and lr["lr_decay_style"] in ("linear", "cosine", "1-sqrt")
        assert mc["_attn_implementation"] in ns.ATTENTION
    assert len(set(reference)) == 5  # stage names are unique across the run too


# The checker must be able to fail: each mutation is something nanotron's parser rejects.
def _set(path, value):
    def mutate(c):
        node = c
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return mutate


def _delete(path):
    def mutate(c):
        node = c
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return mutate


MUTATIONS = [
    (_set(("model", "model_config", "num_kv_heads"), 4), "unknown key"),
    (_delete(("tokens", "train_steps")), "train_steps: missing"),
    (_set(("tokens", "train_steps"), "53500"), "expected int"),
    (_set(("model", "model_config", "num_key_value_heads"), 3), "must be divisible by num_key_value_heads"),
    (_set(("data_stages", 0, "start_training_step"), 2), "must start at step 1"),
    (_set(("data_stages", 0, "data", "dataset", "dataset_weights"), [0.5, 0.5]), "dataset_weights for"),
    (_set(("optimizer", "learning_rate_scheduler", "lr_decay_style"), "exponential"), "lr_decay_style must be"),
    (_set(("optimizer", "learning_rate_scheduler", "lr_warmup_style"), None), "lr_warmup_style"),
    (_set(("model", "dtype"), "bf16"), "model.dtype"),
    (_set(("parallelism", "pp_engine"), "gpipe"), "pp_engine"),
    (_set(("model", "model_config", "_attn_implementation"), "eager"), "model_config"),
]


@pytest.mark.parametrize("mutate,expected", MUTATIONS)
def test_checker_rejects_what_nanotron_rejects(reference, mutate, expected):
    config = copy.deepcopy(reference["stage2"])
    mutate(config)
    problems = ns.check_config(config)
    assert any(expected in p for p in problems), problems


def test_sft_section_without_sft_key_would_load_as_pretraining(reference):
    config = copy.deepcopy(reference["sft"])
    dataset = config["data_stages"][0]["data"]["dataset"]
    del dataset["sft_dataloader"], dataset["debug_max_samples"]
    assert ns.check_config(config) == []  # nanotron accepts it ...
    assert ns.resolved_classes(config)["data_stages[0].data.dataset"] == "PretrainDatasetsArgs"  # ... as the wrong thing


def test_gpu_extra_pins_the_commit_the_schema_describes(root):
    pyproject = (root / "pyproject.toml").read_text()
    pinned = re.findall(r"nanotron @ git\+https://github.com/huggingface/nanotron@([0-9a-f]{40})", pyproject)
    assert pinned == [NANOTRON_COMMIT]
    assert NANOTRON_COMMIT[:8] in ns.__doc__


def test_the_cluster_setup_installs_the_pinned_commit(root):
    """slurm/setup_env.sh reads the commit out of our config renderer's source: a moved module must not break it."""
    import subprocess

    line = next(text for text in (root / "slurm" / "setup_env.sh").read_text().splitlines() if text.startswith("NANOTRON_COMMIT=$("))
    out = subprocess.run(["bash", "-c", f'ROOT="{root}"; {line}; echo "$NANOTRON_COMMIT"'], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == NANOTRON_COMMIT
