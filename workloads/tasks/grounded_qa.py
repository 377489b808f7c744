"""A generator of document-grounded QA: short documents of facts, answerable and unanswerable
questions, and answers with several valid surface forms ("3" / "three", "Rome" / "in Rome").

It stands in for MultiDoc2Dial-style data (Gupta et al. 2024, the SSR paper) at a scale a tiny
byte-level model can learn: every document states a few facts about a few people; a question
asks for one of them (answerable) or for a fact the document does not state (unanswerable,
gold = the abstention). `pretraining_documents` renders the same kind of QA in the *other*
surface forms and without abstentions: a base model pretrained on it already answers many
questions acceptably but in its own words, which is the situation SSR is designed for.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from carina.workloads.judges.normalize import NUMBER_WORDS
from carina.workloads.tasks.types import QAExample, qa_prompt, qa_target

NAMES = (
    "Ada",
    "Ben",
    "Cleo",
    "Dan",
    "Eva",
    "Finn",
    "Gus",
    "Hana",
    "Ivo",
    "Jan",
    "Kim",
    "Lea",
    "Max",
    "Nia",
    "Otto",
    "Pia",
    "Raj",
    "Sara",
    "Tom",
    "Uma",
    "Vic",
    "Wen",
    "Yara",
    "Zoe",
)
CITIES = (
    "Rome",
    "Oslo",
    "Lima",
    "Kyiv",
    "Doha",
    "Riga",
    "Bern",
    "Nice",
    "Kobe",
    "Pune",
    "Cork",
    "Graz",
    "Baku",
    "Minsk",
    "Quito",
    "Hanoi",
)
COLOURS = ("red", "blue", "green", "black", "white", "yellow", "pink", "grey", "brown", "purple")
PETS = ("cats", "dogs", "birds", "fish")


# Facts come from one fixed small world (seeded by WORLD_SEED): every document that mentions
# Ada says she lives in the same city. A base pretrained on transcripts of this world knows
# many answers by heart, as a pretrained LM knows facts; what fine-tuning must add is
# grounding: abstain when the document does not state the fact, even one the model "knows".
WORLD_SEED = 2024


@dataclass(frozen=True)
class Fact:
    """One stated fact: its sentence, the question about it, and its answer's surface forms."""

    person: str
    attribute: str
    sentence: str
    forms: tuple[str, ...]  # canonical first, then the other valid forms


def _person_facts(rng: random.Random, p: str) -> list[Fact]:
    city, colour = rng.choice(CITIES), rng.choice(COLOURS)
    n, pet, year = rng.randint(2, 12), rng.choice(PETS), rng.randint(1950, 2010)
    return [
        Fact(p, "city", f"{p} lives in {city}.", (city, f"in {city}")),
        Fact(p, f"pets:{pet}", f"{p} has {NUMBER_WORDS[n]} {pet}.", (str(n), NUMBER_WORDS[n])),
        Fact(p, "colour", f"{p} likes the colour {colour}.", (colour, f"it is {colour}")),
        Fact(p, "year", f"{p} was born in {year}.", (str(year), f"in {year}")),
    ]


def world(seed: int = WORLD_SEED) -> dict[str, list[Fact]]:
    """Every person's four facts (where they live, their pets, colour and birth year)."""
    rng = random.Random(seed)
    return {p: _person_facts(rng, p) for p in NAMES}


WORLD = world()


def question(person: str, attribute: str) -> str:
    """The question that asks for `attribute` of `person`."""
    if attribute == "city":
        return f"Where does {person} live?"
    if attribute.startswith("pets:"):
        return f"How many {attribute[5:]} does {person} have?"
    if attribute == "colour":
        return f"Which colour does {person} like?"
    return f"When was {person} born?"


def _document(rng: random.Random, people: int, facts_per_person: int) -> list[Fact]:
    facts = []
    for p in rng.sample(NAMES, people):
        facts += rng.sample(WORLD[p], facts_per_person)
    rng.shuffle(facts)
    return facts


def _unstated(rng: random.Random, facts: list[Fact]) -> tuple[str, str]:
    """A (person, attribute) the document does not state: a stranger, or a missing fact."""
    stated = {(f.person, f.attribute.split(":")[0]) for f in facts}
    people = sorted({f.person for f in facts})
    while True:
        person = rng.choice(NAMES) if rng.random() < 0.5 else rng.choice(people)
        kind = rng.choice(("city", "pets", "colour", "year"))
        if (person, kind) not in stated:
            attr = f"pets:{rng.choice(PETS)}" if kind == "pets" else kind
            return person, attr


def generate(
    n: int,
    seed: int,
    unanswerable_fraction: float = 0.4,
    people: int = 2,
    facts_per_person: int = 2,
) -> list[QAExample]:
    """`n` examples, deterministic in `seed`; about `unanswerable_fraction` are unanswerable."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        facts = _document(rng, people, facts_per_person)
        context = " ".join(f.sentence for f in facts)
        if rng.random() < unanswerable_fraction:
            person, attr = _unstated(rng, facts)
            out.append(QAExample(context, question(person, attr), (), id=f"gqa-{seed}-{i}"))
        else:
            f = rng.choice(facts)
            q = question(f.person, f.attribute)
            out.append(QAExample(context, q, f.forms, f"gqa-{seed}-{i}"))
    return out


def pretraining_documents(n: int, seed: int) -> list[str]:
    """QA transcripts for a base model's corpus: answerable only, answers in a non-canonical form.

    Each document is one prompt and answer in the fine-tuning format, so the base learns the
    format and the grounding, but says "in Rome" where the fine-tuning gold says "Rome".
    """
    docs = []
    for ex in generate(n, seed, unanswerable_fraction=0.0):
        docs.append(qa_prompt(ex) + qa_target(ex.answers[-1]))
    return docs
