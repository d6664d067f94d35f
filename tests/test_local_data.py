"""The local backend's inputs: nanotron's blending order, the batches it feeds, the model it builds."""

import math

import numpy as np
import pytest
import torch

from smolrecipe.local_data import IGNORE_INDEX, StageNanoset, blend_index, collate_pretrain
from smolrecipe.local_model import build_model
from smolrecipe.plan import build_plan
from smolrecipe.recipe import load_recipe


def test_blend_index_follows_the_weights_at_every_prefix():
    lengths, weights = [50, 20, 30], [0.5, 0.3, 0.2]
    folder, sample = blend_index(lengths, weights, n_samples=100, seed=7)
    assert len(folder) == len(sample) == 100
    # Before the permutation every prefix is within one sample of its share; after it, the
    # epoch as a whole still holds exactly round-robin-by-error counts.
    counts = np.bincount(folder, minlength=3)
    assert counts.tolist() == [50, 30, 20]
    assert all(sample[folder == k].max() < lengths[k] for k in range(3))  # wraps inside each folder
    # every sample of a folder is drawn once before any is drawn again (folder 1 wraps: 30 > 20)
    assert sorted(sample[folder == 0].tolist()) == list(range(50))
    assert sorted(sample[folder == 1].tolist()) == sorted(list(range(20)) + list(range(10)))


def test_blend_index_is_seeded_and_repeats_epochs():
    a = blend_index([3, 5], [0.5, 0.5], n_samples=20, seed=1)
    b = blend_index([3, 5], [0.5, 0.5], n_samples=20, seed=1)
    c = blend_index([3, 5], [0.5, 0.5], n_samples=20, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])
    epoch = 8  # sum of lengths: nanotron builds one epoch and tiles it
    assert np.array_equal(a[0][:epoch], a[0][epoch:2 * epoch])


def test_blend_index_greedy_order_before_shuffling():
    """nanotron's first draws for weights (0.7, 0.3): the folder furthest below its share."""
    folder, _ = blend_index([10, 10], [0.7, 0.3], n_samples=20, seed=0)
    rng_order = np.random.RandomState(0).permutation(20)
    unshuffled = np.empty(20, dtype=np.int64)
    unshuffled[rng_order] = folder
    assert unshuffled[:10].tolist() == [0, 1, 0, 0, 1, 0, 0, 1, 0, 0]


@pytest.mark.slow
def test_stage_nanoset_batches(prepared):
    recipe_path, _ = prepared
    recipe = load_recipe(recipe_path)
    stage = build_plan(recipe).stage("stage2")  # three domains plus replay
    seq = recipe.training.sequence_length
    data = StageNanoset(stage, seq, recipe.training.seed)
    assert len(data) == stage.train_steps * stage.global_batch
    assert sum(data.samples_per_folder().values()) == len(data)
    # nanotron's blend is exact over one epoch (as many samples as all folders hold); a stage
    # shorter than that sees a shuffled slice of it, so its shares are only approximately the weights.
    epoch = sum(data.lengths)
    folder, _ = blend_index(data.lengths, [fw.weight for fw in stage.weights], epoch, recipe.training.seed)
    counts = np.bincount(folder, minlength=len(stage.weights))
    for fw, count in zip(stage.weights, counts, strict=True):
        assert abs(count - fw.weight * epoch) <= 1, fw
    assert np.array_equal(data.folder_index, folder[: len(data)])
    batch = collate_pretrain([data[i] for i in range(8)])
    assert batch["input_ids"].shape == batch["labels"].shape == batch["position_ids"].shape == (8, seq)
    assert batch["shift_labels"] is batch["labels"]
    for row in range(8):
        ids, labels, pos = batch["input_ids"][row], batch["labels"][row], batch["position_ids"][row]
        # labels are the next tokens, except where the next token starts a new document
        starts = torch.nonzero(pos[1:] == 0).flatten()
        keep = labels != IGNORE_INDEX
        assert torch.equal(labels[:-1][keep[:-1]], ids[1:][keep[:-1]])
        assert set(torch.nonzero(~keep).flatten().tolist()) == set(starts.tolist()) | (
            {seq - 1} if labels[-1] == IGNORE_INDEX else set())
        # positions restart at 0 right after each document's end token
        for s in starts.tolist():
            assert ids[s].item() == 0  # <|endoftext|>, the tiny recipe's document_end
        assert pos[0] == 0 or pos[0] > 0  # a window may open mid-document


def test_position_ids_mask_attention_across_documents(root):
    """Two documents packed in one row score as if each were alone (nanotron's document masking)."""
    recipe = load_recipe(root / "recipes" / "tiny.yaml")
    model = build_model(recipe).eval()
    torch.manual_seed(0)
    a, b = torch.randint(3, 1000, (1, 7)), torch.randint(3, 1000, (1, 5))
    packed = torch.cat([a, b], dim=1)
    positions = torch.cat([torch.arange(7), torch.arange(5)]).unsqueeze(0)
    with torch.no_grad():
        both = model(input_ids=packed, position_ids=positions).logits
        alone = model(input_ids=b, position_ids=torch.arange(5).unsqueeze(0)).logits
        leaky = model(input_ids=packed).logits  # without positions, b attends to a
    assert torch.allclose(both[:, 7:], alone, atol=1e-5)
    assert not torch.allclose(leaky[:, 7:], alone, atol=1e-5)


def test_model_matches_the_recipe_and_nanotron_init(root):
    recipe = load_recipe(root / "recipes" / "tiny.yaml")
    model = build_model(recipe)
    m, cfg = recipe.model, model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size) == (m.num_layers, m.hidden_size, m.intermediate_size)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads) == (m.num_attention_heads, m.num_key_value_heads)
    assert cfg.rope_parameters["rope_theta"] == m.rope_theta and cfg.rms_norm_eps == m.rms_norm_eps
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied
    params = dict(model.named_parameters())
    std = m.init_std
    assert params["model.embed_tokens.weight"].std().item() == pytest.approx(std, rel=0.02)
    residual = torch.cat([params[f"model.layers.{i}.{n}.weight"].flatten()
                          for i in range(m.num_layers) for n in ("self_attn.o_proj", "mlp.down_proj")])
    assert residual.std().item() == pytest.approx(std / math.sqrt(2 * m.num_layers), rel=0.05)
    assert torch.all(params["model.norm.weight"] == 1)
    again = build_model(recipe)
    assert torch.equal(again.model.embed_tokens.weight, model.model.embed_tokens.weight)  # seeded


def test_interleaved_rope_is_refused(tiny_dict, write_recipe):
    from smolrecipe.errors import RecipeError

    tiny_dict["model"]["rope_interleaved"] = True
    with pytest.raises(RecipeError, match="model.rope_interleaved"):
        build_model(load_recipe(write_recipe(tiny_dict)))


@pytest.mark.parametrize("recipe_name", ["tiny", "llama500m"])
def test_one_device_keeps_the_global_batch(recipe_name, root, tmp_path):
    """dp ranks become more accumulation steps: the optimizer sees the plan's global batch."""
    from smolrecipe.local_train import training_arguments

    recipe = load_recipe(root / "recipes" / f"{recipe_name}.yaml")
    for stage in build_plan(recipe).stages:
        args = training_arguments(recipe, stage, tmp_path, [], sft=False)
        assert args.per_device_train_batch_size * args.gradient_accumulation_steps == stage.global_batch
        assert args.max_steps == stage.train_steps and args.learning_rate == stage.lr.peak
        assert args.save_steps == recipe.training.checkpoint_interval
        assert args.max_grad_norm == recipe.training.optimizer.clip_grad
        assert (args.adam_beta1, args.adam_beta2, args.weight_decay) == (
            recipe.training.optimizer.beta1, recipe.training.optimizer.beta2, recipe.training.optimizer.weight_decay)
    assert recipe.parallelism.dp == (4 if recipe_name == "llama500m" else 1)
