"""The Hugging Face hub account a gated source or tokenizer needs, checked before any work."""

from __future__ import annotations

from smolrecipe.errors import UserError


def require_login(field: str, repo: str, page: str) -> None:
    """UserError on `field` when this machine holds no hub token for the gated `repo` (whose terms
    are accepted at `page`): on a cluster that is the login node's job, before anything runs."""
    from huggingface_hub import get_token

    if get_token() is None:
        raise UserError(field, f"{repo} is gated and this machine has no Hugging Face token",
                        f"on the login node run `hf auth login` and accept the terms at {page}")
