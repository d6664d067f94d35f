"""Preference pairs: reading both layouts, rendering with the chat template, what TRL's trainers make
of our records (the loss covers the answer and its end of turn, never the prompt), the held-out
split, and the stage's config as TRL's own classes check it."""

import inspect
import json
import re

import pytest
import yaml

from smolrecipe.data.preferences import (
    HELDOUT_FILE,
    TRAIN_FILE,
    PairStats,
    convert,
    is_heldout,
    write_preference_dataset,
)
from smolrecipe.errors import UserError
from smolrecipe.recipe.schema import DPO_LOSS_TYPES, PreferenceData

DATA = PreferenceData(path="pairs", heldout_fraction=0.0)
QUESTION = "How far is Larkby from Mirefield?"


def as_messages(prompt: str, chosen: str, rejected: str, system: str | None = None) -> dict:
    before = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return {"prompt": prompt, "chosen": before + [{"role": "assistant", "content": chosen}],
            "rejected": before + [{"role": "assistant", "content": rejected}]}


def pairs(records, tokenizer, data=DATA, max_tokens=128):
    stats = PairStats()
    return [pair for _, pair in convert(records, data, tokenizer, max_tokens, stats)], stats


def test_dpo_loss_types_are_the_installed_trls():
    """Our list (checked at recipe load time) is the one DPOTrainer checks at its first step."""
    from trl import DPOTrainer

    listed = re.search(r"Should be one of (\[[^\]]*\])", inspect.getsource(DPOTrainer).replace('"\n', '').replace('f"', ''))
    assert listed is not None
    assert set(DPO_LOSS_TYPES) == set(re.findall(r"'([a-z_]+)'", listed.group(1)))


def test_message_lists_and_plain_strings_render_alike(hf_tokenizer):
    """UltraFeedback's layout (whole conversations) and plain strings give the same text pair: the
    prompt rendered with the generation prompt, each answer as the template renders it, without the
    end-of-turn token (the trainers append it)."""
    plain = {"prompt": QUESTION, "chosen": "23 miles.", "rejected": "Seven."}
    out, stats = pairs([plain, as_messages(QUESTION, "23 miles.", "Seven.")], hf_tokenizer)
    assert out[0] == out[1] == {"prompt": f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n",
                                "chosen": "23 miles.", "rejected": "Seven."}
    assert stats.read == stats.records == 2 and not stats.dropped
    # a longer conversation: everything before the last assistant turn is the prompt
    long, _ = pairs([as_messages(QUESTION, "23 miles.", "Seven.", system="Be brief.")], hf_tokenizer)
    assert long[0]["prompt"].startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n")


def test_unusable_pairs_are_dropped_and_counted(hf_tokenizer):
    good = as_messages(QUESTION, "23 miles.", "Seven.")
    other_prompt = as_messages(QUESTION, "23 miles.", "Seven.")
    other_prompt["rejected"][0] = {"role": "user", "content": "Something else?"}
    ends_with_user = as_messages(QUESTION, "23 miles.", "Seven.")
    ends_with_user["chosen"] = ends_with_user["chosen"] + [{"role": "user", "content": "and?"}]
    records = [
        good, other_prompt, ends_with_user,
        {"prompt": QUESTION, "chosen": "Same.", "rejected": " Same. "},
        {"prompt": QUESTION, "chosen": "x " * 200, "rejected": "y"},
        {"prompt": QUESTION, "chosen": "a", "rejected": 3},
        {"prompt": "", "chosen": "a", "rejected": "b"},
        as_messages(QUESTION, "", "b"),
        "not a record",
    ]
    out, stats = pairs(records, hf_tokenizer)
    assert len(out) == 1 and stats.read == len(records)
    assert stats.dropped == {"different_prompts": 1, "not_ending_in_assistant_turn": 1, "chosen_equals_rejected": 1,
                             "longer_than_max_length": 1, "not_a_pair": 1, "empty_prompt": 1, "empty_content": 1,
                             "not_a_record": 1}


def test_max_pairs_reads_no_further(hf_tokenizer):
    data = PreferenceData(path="pairs", heldout_fraction=0.0, max_pairs=3)
    out, stats = pairs(({"prompt": f"{i}?", "chosen": "a", "rejected": "b"} for i in range(100)), hf_tokenizer, data)
    assert len(out) == 3 and stats.read == 3


def test_heldout_split_is_by_prompt_and_stable():
    prompts = [f"<|im_start|>user\nWhat is {i} + {i}?<|im_end|>\n" for i in range(4000)]
    held = [p for p in prompts if is_heldout(p, 0.1)]
    assert 0.08 < len(held) / len(prompts) < 0.12
    assert held == [p for p in prompts if is_heldout(p, 0.1)]  # the same draw every time
    assert not any(is_heldout(p, 0.0) for p in prompts)
    assert set(held) <= {p for p in prompts if is_heldout(p, 0.2)}  # a larger fraction keeps these held out


def test_the_folder_is_written_whole_with_its_counts(hf_tokenizer, tmp_path):
    import pyarrow.parquet as pq

    data = PreferenceData(path="pairs", heldout_fraction=0.25)
    records = [{"prompt": f"What is {i} + {i}?", "chosen": f"{2 * i}", "rejected": f"{2 * i + 1}"} for i in range(200)]
    records.append({"prompt": "?", "chosen": "same", "rejected": "same"})
    out = tmp_path / "preference"
    manifest = write_preference_dataset(records, data, hf_tokenizer, 128, out, {"fingerprint": "f"}, progress=False)
    train, held = pq.read_table(out / TRAIN_FILE).to_pylist(), pq.read_table(out / HELDOUT_FILE).to_pylist()
    assert manifest["records"] == len(train) and manifest["heldout"] == len(held) and len(train) + len(held) == 200
    assert manifest["dropped"] == {"chosen_equals_rejected": 1} and manifest["read"] == 201
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in held}
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preference"]  # no staging folder left


def test_no_usable_pair_writes_nothing(hf_tokenizer, tmp_path):
    out = tmp_path / "preference"
    with pytest.raises(UserError, match=r"no usable training pair among 2 records.*chosen_equals_rejected"):
        write_preference_dataset([{"prompt": "?", "chosen": "a", "rejected": "a"}] * 2, DATA, hf_tokenizer, 128, out,
                                 progress=False)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def tiny_model(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128)
    return LlamaForCausalLM(config)


def rendered_pairs(tokenizer):
    from datasets import Dataset

    out, _ = pairs([as_messages(QUESTION, "23 miles.", "Seven.\nQ: How far is Larkby?\nA: Seven.")], tokenizer)
    return out[0], Dataset.from_list(out)


@pytest.mark.slow
def test_dpo_trains_on_the_answer_and_its_end_of_turn_only(hf_tokenizer, tmp_path):
    """TRL's DPOTrainer on our text pair: the prompt tokens are exactly the prompt, each side's
    completion is the answer plus one end-of-turn token, and only those carry the loss."""
    from trl import DPOConfig, DPOTrainer

    pair, dataset = rendered_pairs(hf_tokenizer)
    args = DPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to=[], max_length=128,
                     activation_checkpointing=False)
    trainer = DPOTrainer(model=tiny_model(hf_tokenizer), ref_model=tiny_model(hf_tokenizer), args=args, train_dataset=dataset,
                         processing_class=hf_tokenizer)
    row = trainer.train_dataset[0]
    eos = hf_tokenizer.eos_token
    assert hf_tokenizer.decode(row["prompt_ids"]) == pair["prompt"]
    assert hf_tokenizer.decode(row["chosen_ids"]) == pair["chosen"] + eos
    assert hf_tokenizer.decode(row["rejected_ids"]) == pair["rejected"] + eos
    batch = trainer.data_collator([row])
    for i, side in enumerate(("chosen", "rejected")):  # the collator stacks chosen then rejected
        ids, mask = batch["input_ids"][i].tolist(), batch["completion_mask"][i].tolist()
        trained = [t for t, m in zip(ids, mask, strict=True) if m]
        assert hf_tokenizer.decode(trained) == pair[side] + eos and trained.count(hf_tokenizer.eos_token_id) == 1


@pytest.mark.slow
def test_orpo_trains_on_the_answer_and_its_end_of_turn_only(hf_tokenizer, tmp_path):
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    pair, dataset = rendered_pairs(hf_tokenizer)
    args = ORPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to=[], max_length=128,
                      activation_checkpointing=False)
    trainer = ORPOTrainer(model=tiny_model(hf_tokenizer), args=args, train_dataset=dataset, processing_class=hf_tokenizer)
    row = trainer.train_dataset[0]
    assert hf_tokenizer.decode(row["prompt_input_ids"]) == pair["prompt"]  # no second BOS: the prompt starts with <|im_start|>
    for side in ("chosen", "rejected"):
        labels = [t for t in row[f"{side}_labels"] if t != -100]
        assert hf_tokenizer.decode(labels) == pair[side] + hf_tokenizer.eos_token
        assert row[f"{side}_input_ids"][-len(labels):] == labels


@pytest.mark.parametrize("recipe_name", ["tiny", "llama500m"])
def test_trl_accepts_the_rendered_preference_config(root, recipe_name):
    from smolrecipe.backends.nanotron.generate import check_with_trl, render

    rendered = render(root / "recipes" / f"{recipe_name}.yaml")
    verdicts = check_with_trl(rendered)
    assert verdicts == [("preference.yaml", f"ok: accepted by {'trl.DPOConfig'}")]
    config = yaml.safe_load(rendered.files["preference.yaml"])
    stage = rendered.plan.stage("preference")
    assert config["arguments"]["max_steps"] == stage.train_steps
    # the plan's global batch, shared by the node's processes
    args = config["arguments"]
    assert args["per_device_train_batch_size"] * args["gradient_accumulation_steps"] * config["processes"] == stage.global_batch


def test_a_config_trl_refuses_is_reported(root):
    from smolrecipe.backends.nanotron.generate import check_with_trl, render

    rendered = render(root / "recipes" / "tiny.yaml")
    config = yaml.safe_load(rendered.files["preference.yaml"])
    config["arguments"]["loss_weights"] = [1.0, 0.5]  # two weights for one loss type: DPOConfig's own rule
    rendered.files["preference.yaml"] = yaml.safe_dump(config)
    [(name, verdict)] = check_with_trl(rendered)
    assert name == "preference.yaml" and verdict.startswith("FAILED: ValueError")
