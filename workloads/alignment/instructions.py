"""Generated instructions with one right answer each: arithmetic, strings, lists, small Python.

Each family draws its arguments from a seeded generator and computes the response, so the set
is as large as asked, needs no download and every answer is correct. Rendered with the chat
template like the safety set, they teach the "User: ... / Assistant: ..." turn and following a
request, which is what the alignment stage mixes in.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from carina.workloads.alignment.template import render

WORDS = [
    "planet",
    "river",
    "garden",
    "window",
    "silver",
    "market",
    "candle",
    "forest",
    "engine",
    "pocket",
    "yellow",
    "bridge",
    "letter",
    "orange",
    "castle",
    "mirror",
    "thunder",
    "pencil",
    "rocket",
    "summer",
]
CAPITALS = {
    "France": "Paris",
    "Japan": "Tokyo",
    "Italy": "Rome",
    "Canada": "Ottawa",
    "Kenya": "Nairobi",
    "Peru": "Lima",
    "Norway": "Oslo",
    "Egypt": "Cairo",
    "Spain": "Madrid",
    "Australia": "Canberra",
    "India": "New Delhi",
    "Brazil": "Brasilia",
}
FUNCTIONS = {
    "returns the square of x": "def square(x): return x * x",
    "returns the larger of a and b": "def larger(a, b): return a if a > b else b",
    "returns the last element of a list xs": "def last(xs): return xs[-1]",
    "tells whether n is even": "def is_even(n): return n % 2 == 0",
    "returns a string s reversed": "def reverse(s): return s[::-1]",
    "returns the sum of a list xs": "def total(xs): return sum(xs)",
    "returns the number of words in a string s": "def word_count(s): return len(s.split())",
    "returns the absolute value of x": "def absolute(x): return x if x >= 0 else -x",
}


@dataclass(frozen=True)
class Instruction:
    """A request and its one-line answer."""

    family: str
    prompt: str
    response: str

    def render(self) -> str:
        """The training document (chat template)."""
        return render(self.prompt, self.response)


def _add(r: random.Random) -> tuple[str, str]:
    a, b = r.randrange(100), r.randrange(100)
    return f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."


def _subtract(r: random.Random) -> tuple[str, str]:
    a, b = sorted((r.randrange(100), r.randrange(100)), reverse=True)
    return f"What is {a} minus {b}?", f"{a} minus {b} is {a - b}."


def _reverse(r: random.Random) -> tuple[str, str]:
    w = r.choice(WORDS)
    return f"Reverse the letters of the word '{w}'.", w[::-1]


def _upper(r: random.Random) -> tuple[str, str]:
    text = " ".join(r.sample(WORDS, 2))
    return f"Write '{text}' in capital letters.", text.upper()


def _sort(r: random.Random) -> tuple[str, str]:
    xs = r.sample(range(50), 4)
    listed = ", ".join(map(str, xs))
    return f"Sort these numbers from smallest to largest: {listed}.", ", ".join(
        map(str, sorted(xs))
    )


def _count(r: random.Random) -> tuple[str, str]:
    words = r.sample(WORDS, r.randint(2, 6))
    return f"How many words are in '{' '.join(words)}'?", f"There are {len(words)} words."


def _capital(r: random.Random) -> tuple[str, str]:
    country = r.choice(sorted(CAPITALS))
    return (
        f"What is the capital of {country}?",
        f"The capital of {country} is {CAPITALS[country]}.",
    )


def _function(r: random.Random) -> tuple[str, str]:
    what = r.choice(sorted(FUNCTIONS))
    return f"Write a Python function that {what}.", FUNCTIONS[what]


FAMILIES: dict[str, Callable[[random.Random], tuple[str, str]]] = {
    "add": _add,
    "subtract": _subtract,
    "reverse": _reverse,
    "upper": _upper,
    "sort": _sort,
    "count": _count,
    "capital": _capital,
    "function": _function,
}


def generate(n: int, seed: int) -> list[Instruction]:
    """`n` instructions, families in turn, arguments drawn from `seed`."""
    rng = random.Random(seed)
    names = list(FAMILIES)
    out = []
    for i in range(n):
        family = names[i % len(names)]
        prompt, response = FAMILIES[family](rng)
        out.append(Instruction(family, prompt, response))
    return out
