"""What a conversation record is (smol-smoltalk's `messages`): a list of {role, content} turns with
at least one assistant turn. SFT records, preference prompts and chat sources of a pretraining
mixture are all checked by this one rule."""

from __future__ import annotations

from typing import Any

ROLES = ("system", "user", "assistant")


def malformed_reason(messages: Any) -> str | None:
    """Why a conversation cannot be trained on, or None."""
    if not isinstance(messages, list) or not messages:
        return "not_a_message_list"
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            return "unknown_role"
        content = message.get("content")
        if not isinstance(content, str) or not content.strip():
            return "empty_content"
    if not any(m["role"] == "assistant" for m in messages):
        return "no_assistant_turn"
    return None
