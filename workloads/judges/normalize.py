"""Answer normalisation and abstention detection, shared by every judge and the refusal metric."""

from __future__ import annotations

import re
import string

# Spelled-out numbers a judge reads as digits (generated tasks draw their numbers from here).
_SPELLED = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty"
)
NUMBER_WORDS = tuple(_SPELLED.split())

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans(dict.fromkeys(string.punctuation, " "))
_NUMBERS = {w: str(i) for i, w in enumerate(NUMBER_WORDS)}

# Phrases that mean "the document does not say" (normalised form). An answer is an abstention
# when it contains one of them; kept as phrases, not single words, so "no" and "not" alone in
# an answer ("not before 1990") do not count.
ABSTENTION_PHRASES = (
    "unanswerable",
    "cannot be answered",
    "can not be answered",
    "cant be answered",
    "cannot answer",
    "cant answer",
    "no answer",
    "not answerable",
    "i dont know",
    "i do not know",
    "unknown",
    "not mentioned",
    "not stated",
    "not in document",
    "not in text",
    "does not say",
    "doesnt say",
    "does not mention",
    "no information",
    "not enough information",
)


def normalize_answer(text: str) -> str:
    """SQuAD-style: lower case, no punctuation or articles, number words as digits, one space."""
    text = text.lower().replace("'", "").replace("’", "").translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(_NUMBERS.get(tok, tok) for tok in text.split())


def is_abstention(text: str) -> bool:
    """Whether `text` declines to answer: it contains an abstention phrase.

    An empty answer is not an abstention: SSR must not keep silence as a target, and a model
    that says nothing has not detected anything.
    """
    norm = normalize_answer(text)
    padded = f" {norm} "
    return any(f" {p} " in padded for p in ABSTENTION_PHRASES)


def token_f1(candidate: str, gold: str) -> float:
    """SQuAD token-overlap F1 of two answers after normalisation."""
    c, g = normalize_answer(candidate).split(), normalize_answer(gold).split()
    if not c or not g:
        return float(c == g)
    common = sum(min(c.count(t), g.count(t)) for t in set(c))
    if common == 0:
        return 0.0
    precision, recall = common / len(c), common / len(g)
    return 2 * precision * recall / (precision + recall)
