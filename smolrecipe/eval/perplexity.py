"""Tier-2 perplexity: bits per byte and token perplexity of a model on a text slice.

Each document is scored as pretraining sees it: after an end-of-document token (the separator in
nanoset folders), every one of its tokens predicted from the ones before. Documents longer than
the model's context are scored with overlapping windows (stride half the context), each token
once, with as much left context as the window allows: the usual sliding-window perplexity.

Bits per byte divide the summed negative log-likelihood by the UTF-8 bytes of the text, so they
compare across tokenizers; token perplexity does not, but it is what the training loss shows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm


@dataclass
class Perplexity:
    nll: float  # summed negative log-likelihood, nats
    tokens: int
    bytes: int
    documents: int

    @property
    def bits_per_byte(self) -> float:
        return self.nll / math.log(2) / self.bytes

    @property
    def token_ppl(self) -> float:
        return math.exp(self.nll / self.tokens)

    def metrics(self) -> dict[str, float | int]:
        return {"bits_per_byte": self.bits_per_byte, "token_ppl": self.token_ppl, "tokens": self.tokens, "bytes": self.bytes}


def windows(n_tokens: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, end, first scored position) of each window over positions 1..n_tokens-1 (position 0
    is the separator, never scored). Every position is scored exactly once."""
    out, scored_to = [], 1
    while scored_to < n_tokens:
        end = min(scored_to + stride if out else context, n_tokens)
        end = max(end, scored_to + 1)
        start = max(0, end - context)
        out.append((start, end, scored_to))
        scored_to = end
    return out


@torch.no_grad()
def score_texts(model, tokenizer, texts: list[str], context: int | None = None, desc: str = "perplexity") -> Perplexity:
    context = context or model.config.max_position_embeddings
    separator = tokenizer.eos_token_id
    device = next(model.parameters()).device
    total = Perplexity(nll=0.0, tokens=0, bytes=0, documents=0)
    for text in tqdm(texts, desc=desc, leave=False):
        ids = [separator] + tokenizer(text, add_special_tokens=False)["input_ids"]
        for start, end, first in windows(len(ids), context, max(1, context // 2)):
            window = torch.tensor([ids[start:end]], device=device)
            logits = model(window).logits.float()[0]
            # logits[i] predicts window[i + 1]: score positions first..end-1 of the document
            targets = window[0, first - start:]
            logprobs = torch.log_softmax(logits[first - start - 1: end - start - 1], dim=-1)
            total.nll -= logprobs.gather(1, targets[:, None]).sum().item()
            total.tokens += len(targets)
        total.bytes += len(text.encode("utf-8"))
        total.documents += 1
    return total
