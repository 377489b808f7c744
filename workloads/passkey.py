"""The passkey task's text: a key stated once in filler, and the question that asks for it.

The long-context evaluation (`longcontext.py`) builds its prompts from these pieces,
and the `passkey` data source generates training documents from them, so a small model can
learn the task at a short length and be tested at longer ones.
"""

from __future__ import annotations

import random

FILLER_SENTENCES = (
    "The grass is green. ",
    "The sky is blue. ",
    "The sun is yellow. ",
    "Here we go. ",
    "There and back again. ",
)
QUESTION = "What is the pass key? The pass key is "
KEY_DIGITS = 5
# Lengths of generated training documents, in bytes (bytes are tokens under `bytes`).
DOCUMENT_BYTES = (128, 2048)


def needle(key: str) -> str:
    """The sentence that states the key."""
    return f"The pass key is {key}. Remember it. {key} is the pass key. "


def random_key(rng: random.Random) -> str:
    return "".join(rng.choice("0123456789") for _ in range(KEY_DIGITS))


def passkey_document(rng: random.Random, size: int) -> str:
    """About `size` bytes: filler with the key at a random sentence boundary, then the answer."""
    key = random_key(rng)
    room = max(0, size - len(needle(key)) - len(QUESTION) - KEY_DIGITS - 1)
    sentences: list[str] = []
    while sum(map(len, sentences)) + len(FILLER_SENTENCES[len(sentences) % 5]) <= room:
        sentences.append(FILLER_SENTENCES[len(sentences) % len(FILLER_SENTENCES)])
    cut = rng.randint(0, len(sentences))
    return "".join(sentences[:cut]) + needle(key) + "".join(sentences[cut:]) + QUESTION + key + "\n"


def passkey_documents(seed: int, n: int) -> list[bytes]:
    """`n` documents of lengths drawn uniformly from DOCUMENT_BYTES, seeded."""
    rng = random.Random(seed * 7_907 + 3)
    return [passkey_document(rng, rng.randint(*DOCUMENT_BYTES)).encode() for _ in range(n)]
