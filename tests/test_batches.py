"""The batches both backends train on (smolrecipe.data.batches), and the model the local backend builds.
tests/test_engine.py holds them against nanotron's own sampler, collator and SFT processing."""

import math

import numpy as np
import pytest
import torch

from smolrecipe.backends.local.model import build_model
from smolrecipe.data.batches import (
    IGNORE_INDEX,
    PretrainSamples,
    SFTRows,
    blend_index,
    collate_pretrain,
    collate_sft,
    sft_batch,
    to_transformers,
)
from smolrecipe.recipe.loading import load_recipe
from smolrecipe.recipe.plan import build_plan


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
def test_pretrain_batches(prepared):
    recipe_path, _ = prepared
    recipe = load_recipe(recipe_path)
    stage = build_plan(recipe).stage("stage2")  # three domains plus replay
    seq = recipe.training.sequence_length
    data = PretrainSamples.for_stage(stage, seq, recipe.training.seed)
    assert len(data) == stage.train_steps * stage.global_batch
    assert sum(data.samples_per_folder().values()) == len(data)
    # nanotron's blend is exact over one epoch (as many samples as all folders hold); a stage
    # shorter than that sees a shuffled slice of it, so its shares are only approximately the weights.
    epoch = sum(data.lengths)
    # (a stage longer than an epoch, as the tiny recipe's are on this small corpus, repeats it)
    folder, _ = blend_index(data.lengths, [fw.weight for fw in stage.weights], max(epoch, len(data)), recipe.training.seed)
    counts = np.bincount(folder[:epoch], minlength=len(stage.weights))
    for fw, count in zip(stage.weights, counts, strict=True):
        assert abs(count - fw.weight * epoch) <= 1, fw
    assert np.array_equal(data.folder_index, folder[: len(data)])
    data.update_consumption_metrics(0, 16, seq)
    assert sum(s["tokens"] for s in data.get_consumption_stats().values()) == 16 * seq

    items = [data[i] for i in range(8)]
    batch = collate_pretrain(items)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (8, seq)
    assert "position_ids" not in batch  # positions run along the window, attention crosses documents
    assert batch["shift_labels"] is batch["labels"] and bool(batch["attention_mask"].all())
    for row, item in enumerate(items):
        ids, labels, pos = batch["input_ids"][row], batch["labels"][row], torch.from_numpy(item["positions"])
        # labels are the next tokens, except where the next token starts a new document
        starts = torch.nonzero(pos[1:] == 0).flatten()
        keep = labels != IGNORE_INDEX
        assert torch.equal(labels[keep], torch.from_numpy(item["input_ids"][1:])[keep])
        assert set(torch.nonzero(~keep).flatten().tolist()) == set(starts.tolist())
        # a document ends with the recipe's document_end token, exactly where datatrove's index ends it
        for s in starts.tolist():
            assert ids[s].item() == 0  # <|endoftext|>, the tiny recipe's document_end


@pytest.mark.slow
def test_sft_rows_are_right_padded_with_loss_on_completions(prepared, hf_tokenizer):
    from datasets import load_dataset

    from smolrecipe.data.chats import completion_mask

    recipe_path, _ = prepared
    recipe = load_recipe(recipe_path)
    stage = build_plan(recipe).stage("sft")
    seq = recipe.training.sequence_length
    records = load_dataset(stage.dataset, split="train").select(range(6))
    rows = SFTRows(records, hf_tokenizer, seq, n_samples=8)
    assert len(rows) == 8 and np.array_equal(rows[7]["input_ids"], rows[1]["input_ids"])  # records cycle
    batch = collate_sft([rows[i] for i in range(6)])
    for i, record in enumerate(records):
        ids, on_completion = completion_mask(record["prompt"], record["completion"], hf_tokenizer)
        n = len(ids) - 1
        assert batch["input_ids"][i, :n].tolist() == ids[:-1]
        assert bool(batch["attention_mask"][i].all())  # padding is after the real tokens: causality hides it
        want = [t if m else IGNORE_INDEX for t, m in zip(ids[1:], on_completion[1:], strict=True)]
        assert batch["labels"][i, :n].tolist() == want
        assert (batch["labels"][i, n:] == IGNORE_INDEX).all()  # padding
        assert want[-1] == recipe.tokenizer.eos_token_id  # the end-of-turn token is learned
        assert want.count(IGNORE_INDEX) == len(hf_tokenizer(record["prompt"]).input_ids) - 1
    longest = max(len(completion_mask(r["prompt"], r["completion"], hf_tokenizer)[0]) - 1 for r in records)
    assert batch["input_ids"].shape == (6, min(longest, seq))  # cut after the last label: the rest is padding in every row
    # and the cut changes nothing a model computes: the loss of the engine's full-width batch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(hf_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=seq))
    full = to_transformers(sft_batch([rows[i] for i in range(6)]))
    assert full["input_ids"].shape[1] == seq > batch["input_ids"].shape[1]
    with torch.no_grad():
        assert model(**batch).loss.item() == pytest.approx(model(**full).loss.item(), rel=1e-5)


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
    from smolrecipe.errors import UserError

    tiny_dict["model"]["rope_interleaved"] = True
    with pytest.raises(UserError, match="model.rope_interleaved"):
        build_model(load_recipe(write_recipe(tiny_dict)))


@pytest.mark.parametrize("recipe_name", ["tiny", "llama500m"])
def test_one_device_keeps_the_global_batch(recipe_name, root, tmp_path):
    """dp ranks become more accumulation steps: the optimizer sees the plan's global batch."""
    from smolrecipe.backends.local.train import training_arguments

    recipe = load_recipe(root / "recipes" / f"{recipe_name}.yaml")
    for stage in build_plan(recipe).stages:
        args = training_arguments(recipe, stage, tmp_path, [])
        assert args.per_device_train_batch_size * args.gradient_accumulation_steps == stage.global_batch
        assert args.max_steps == stage.train_steps and args.learning_rate == stage.lr.peak
        assert args.save_steps == recipe.training.checkpoint_interval
        assert args.max_grad_norm == recipe.training.optimizer.clip_grad
        assert (args.adam_beta1, args.adam_beta2, args.weight_decay) == (
            recipe.training.optimizer.beta1, recipe.training.optimizer.beta2, recipe.training.optimizer.weight_decay)
    assert recipe.parallelism.dp == (4 if recipe_name == "llama500m" else 1)
