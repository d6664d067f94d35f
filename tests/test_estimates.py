"""Parameter count and the memory verdicts the report observed."""

import pytest

from smolrecipe.recipe.estimates import GB, count_params, estimate_memory, fits
from smolrecipe.recipe.loading import load_recipe


@pytest.fixture(scope="module")
def reference(root):
    return load_recipe(root / "recipes" / "llama500m.yaml")


def test_reference_has_492m_params(reference):
    p = count_params(reference)
    assert abs(p.total - 492e6) <= 3e6
    assert p.embedding == 128_256 * 1024 and p.lm_head == 0  # tied
    # per layer: q + o (h^2 each), k + v (h x 256 each), SwiGLU 3 x h x 2816, two RMSNorms
    assert p.per_layer == 2 * 1024**2 + 2 * 1024 * 256 + 3 * 1024 * 2816 + 2 * 1024
    assert p.total == p.embedding + p.non_embedding


def test_untied_head_counts_twice(tiny_dict):
    from smolrecipe.recipe.loading import recipe_from_dict

    tiny_dict["model"]["tie_word_embeddings"] = False
    p = count_params(recipe_from_dict(tiny_dict))
    assert p.lm_head == p.embedding


def test_report_memory_observations(reference):
    big = estimate_memory(reference, micro_batch_size=32, recompute=False)
    small = estimate_memory(reference, micro_batch_size=4, recompute=True)
    assert not fits(reference, big)
    assert fits(reference, small)
    assert big.logits / GB > 40  # fp32 logits of a 128k vocabulary dominate large micro-batches
    # 18 bytes per parameter for weights, fp32 grads and AdamW states
    assert (small.weights + small.grads + small.optimizer) == pytest.approx(18 * count_params(reference).total)


def test_recompute_saves_activation_memory(reference):
    for mbs in (1, 4, 32):
        on = estimate_memory(reference, mbs, True)
        off = estimate_memory(reference, mbs, False)
        assert on.activations < off.activations / 5
        assert on.logits == off.logits


def test_tiny_is_a_few_million_params_mostly_in_its_layers(root):
    tiny = load_recipe(root / "recipes" / "tiny.yaml")
    p = count_params(tiny)
    assert 2e6 <= p.total <= 3e6
    assert p.non_embedding > 0.6 * p.total  # its own 4,096-entry tokenizer: the layers hold most of it
    assert fits(tiny, estimate_memory(tiny))
