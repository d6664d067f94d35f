"""Load the generated configs with nanotron's own parser, wherever nanotron is importable.

nanotron needs CUDA (flash-attn), so on CPU machines this skips with the reason; on a cluster node
set up by slurm/setup_env.sh it runs. The schema checker in smolrecipe.nanotron_schema covers the
same ground everywhere (tests/test_nanotron_conformance.py).
"""

from pathlib import Path

import pytest

from smolrecipe.generate import nanotron_available

pytestmark = pytest.mark.skipif(
    not nanotron_available(), reason="nanotron is not importable here (it needs CUDA/flash-attn); "
    "the written-down schema of the pinned commit is checked in test_nanotron_conformance.py instead"
)


def _stand_in_tokenizer(folder, vocab_size):
    """A word-level tokenizer with exactly the recipe's vocabulary size: nanotron checks the model's
    vocab_size against len(tokenizer) of the tokenizer named in the data folders' metadata."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(vocab_size)}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="t0")),
                                  bos_token="t1", eos_token="t2", unk_token="t0")
    tok.save_pretrained(folder)


@pytest.mark.parametrize("recipe_name", ["llama500m", "tiny"])
def test_configs_load_with_nanotron(recipe_name, root, tmp_path, monkeypatch):
    from smolrecipe.generate import check_with_nanotron, render

    for var in ("SCRATCH", "SMOLRECIPE_DATA", "SMOLRECIPE_RUNS"):
        monkeypatch.setenv(var, str(tmp_path))
    recipe_path = root / "recipes" / f"{recipe_name}.yaml"
    rendered = render(recipe_path, resolve=True)
    recipe = rendered.plan.recipe
    _stand_in_tokenizer(recipe.tokenizer.path, recipe.model.vocab_size)
    for stage in rendered.plan.stages:
        for fw in stage.weights:
            Path(fw.folder).mkdir(parents=True, exist_ok=True)
            # What datatrove's DocumentTokenizer writes next to each .ds file.
            (Path(fw.folder) / "000_tokenized.ds.metadata").write_text(f"{recipe.tokenizer.path}|4\n")
    results = check_with_nanotron(rendered)
    assert [name for name, _ in results] == [f"{s.name}.yaml" for s in rendered.plan.stages]
    for name, verdict in results:
        assert verdict.startswith("ok"), (name, verdict)
