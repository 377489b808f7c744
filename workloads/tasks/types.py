"""The two example types and the one prompt format every QA task uses."""

from __future__ import annotations

from dataclasses import dataclass

# What a model says for an unanswerable question (the gold of the refusal task). Judges accept
# other abstentions too ("I don't know", "not in the document"); see judges/normalize.py.
ABSTENTION = "unanswerable"

QA_PROMPT = "Document: {context}\nQuestion: {question}\nAnswer:"


@dataclass(frozen=True)
class QAExample:
    """A document-grounded question; `answers` lists every valid surface form (none: unanswerable).

    The first form is the canonical gold that SFT trains on.
    """

    context: str
    question: str
    answers: tuple[str, ...]
    id: str = ""

    @property
    def answerable(self) -> bool:
        return bool(self.answers)

    @property
    def gold(self) -> str:
        """The canonical answer, or the abstention for an unanswerable question."""
        return self.answers[0] if self.answers else ABSTENTION


@dataclass(frozen=True)
class ChoiceExample:
    """A context and its candidate continuations; `label` indexes the right one."""

    context: str
    choices: tuple[str, ...]
    label: int
    id: str = ""


def qa_prompt(ex: QAExample) -> str:
    """The prompt a model sees; its answer follows after one space and ends with a newline."""
    return QA_PROMPT.format(context=ex.context, question=ex.question)


def qa_target(answer: str) -> str:
    """The response text trained on for `answer`: ' answer\\n' (the newline ends generation)."""
    return " " + answer.strip() + "\n"
