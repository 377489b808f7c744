"""The one chat template every alignment example is rendered with, in training and evaluation.

    User: <prompt>
    Assistant: <response>

A response is one line: generation stops at the newline that ends it.
"""

from __future__ import annotations

USER = "User: "
ASSISTANT = "Assistant:"


def prompt_text(prompt: str) -> str:
    """What a model reads before answering; its answer follows after one space."""
    return f"{USER}{prompt}\n{ASSISTANT}"


def render(prompt: str, response: str) -> str:
    """One training document: the prompt and its one-line response."""
    return f"{prompt_text(prompt)} {response.strip()}\n"
