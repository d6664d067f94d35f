"""Answers of two checkpoints to the same fixed prompts, side by side: the base model (end of the
last pretraining stage) against the SFT model, as in the seed report's base-vs-SFT table.

Both get the prompt through the chat template with the assistant header, and greedy decoding, so
the only difference is the training. An answer "ends with the end-of-turn token" when generation
stopped on the tokenizer's eos (<|im_end|> for ChatML) rather than on the length limit.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from smolrecipe.backends.hf_folder import check_hf_folder

# Chat-style requests of the kinds the demo corpus's chats cover, about what the SFT chats never
# show (towns and sums held out of them: demo.corpus.heldout_towns, HELDOUT_SUMS; a test keeps these
# prompts held out), plus two requests of kinds it never saw.
DEMO_PROMPTS = (
    "Which river flows through Marrowhaven?",
    "What is Kestrelford known for?",
    "On which day is the market in Tallowfield?",
    "What is 7 + 8?",
    "What is 6 * 7?",
    "Give me a bulleted list of three fruits.",
    "Write \"copper kettle\" in capital letters.",
    "Write a Python function named add_one that returns its argument plus one.",
    "What is the capital of France?",
    "Say hello in one word.",
)


@torch.no_grad()
def answer(folder: str | Path, prompts: tuple[str, ...] = DEMO_PROMPTS, max_new_tokens: int = 48) -> dict:
    check_hf_folder(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    eos = model.generation_config.eos_token_id
    answers, ended = [], []
    for prompt in prompts:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos,
                             pad_token_id=model.generation_config.pad_token_id)
        new = out[0, ids["input_ids"].shape[1]:].tolist()
        ended.append(bool(new) and new[-1] == eos)
        answers.append(tokenizer.decode(new, skip_special_tokens=True).strip())
    return {"checkpoint": str(folder), "answers": answers, "ends_with_eot": ended}


def compare(checkpoints: dict[str, str | Path], prompts: tuple[str, ...] = DEMO_PROMPTS) -> dict:
    """{"prompts": [...], "models": {label: answer(...)}} — the samples.json the report reads."""
    return {"prompts": list(prompts), "models": {label: answer(folder, prompts) for label, folder in checkpoints.items()}}
