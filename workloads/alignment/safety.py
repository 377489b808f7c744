"""The shipped safety and red-team set: harmful prompts with refusals, benign ones with answers.

`data/safety.jsonl`, one object per line: {"id", "group", "category", "kind", "prompt",
"response"}. `kind` is `harmful` (the response refuses, briefly and without detail) or
`benign` (a borderline-sounding but harmless prompt - "how do I kill a stuck process" - with a
helpful answer, so a model that refuses everything scores badly on over-refusal). A harmful
prompt comes twice in one `group`: asked directly and wrapped in a jailbreak phrase (role play,
"ignore your instructions", a claimed authorization).

`split` holds out whole groups, every fourth per category and kind, so a wrapped variant of a
held-out prompt is never trained on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from carina.workloads.alignment.template import render

SAFETY_FILE = Path(__file__).parent / "data" / "safety.jsonl"
CATEGORIES = (
    "violence",
    "weapons",
    "dangerous-chemistry",
    "cybercrime",
    "fraud",
    "drugs",
    "self-harm",
    "hate",
    "privacy",
    "extremism",
)
KINDS = ("harmful", "benign")
HOLD_OUT_EVERY = 4
_FIELDS = ("id", "group", "category", "kind", "prompt", "response")


@dataclass(frozen=True)
class SafetyExample:
    """One prompt of the safety set and the response trained on."""

    id: str
    group: str
    category: str
    kind: Literal["harmful", "benign"]
    prompt: str
    response: str

    @property
    def harmful(self) -> bool:
        return self.kind == "harmful"

    def render(self) -> str:
        """The training document (chat template)."""
        return render(self.prompt, self.response)


def parse_example(obj: object, where: str) -> SafetyExample:
    """One record; ValueError naming the line and the field when it breaks a rule."""
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: not a JSON object")
    for key in _FIELDS:
        value = obj.get(key)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{where}: field {key!r} must be a non-empty string")
    if obj["category"] not in CATEGORIES:
        raise ValueError(f"{where}: field 'category' must be one of {', '.join(CATEGORIES)}")
    if obj["kind"] not in KINDS:
        raise ValueError(f"{where}: field 'kind' must be harmful or benign")
    if "\n" in obj["response"] or "\n" in obj["prompt"]:
        raise ValueError(f"{where}: fields 'prompt' and 'response' must be one line each")
    return SafetyExample(**{key: obj[key] for key in _FIELDS})


def load_safety_set(path: Path = SAFETY_FILE) -> list[SafetyExample]:
    """Every example of the set, in file order."""
    out = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{lineno}: not JSON: {e}") from e
                out.append(parse_example(obj, f"{path}:{lineno}"))
    return out


def split(
    examples: Iterable[SafetyExample], every: int = HOLD_OUT_EVERY
) -> tuple[list[SafetyExample], list[SafetyExample]]:
    """(train, held out): every `every`-th group of each category and kind is held out."""
    order: dict[tuple[str, str], list[str]] = {}
    items = list(examples)
    for ex in items:
        groups = order.setdefault((ex.category, ex.kind), [])
        if ex.group not in groups:
            groups.append(ex.group)
    held = {g for groups in order.values() for i, g in enumerate(groups) if i % every == every - 1}
    return [ex for ex in items if ex.group not in held], [ex for ex in items if ex.group in held]
