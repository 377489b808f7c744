"""The shipped safety set and the alignment data sources built from it."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from carina.workloads.alignment import instructions, safety
from carina.workloads.alignment.template import prompt_text
from carina.workloads.config import DataSource, DataSpec, TaskDataSpec
from carina.workloads.data import load_documents
from carina.workloads.judges.refusal import is_refusal
from carina.workloads.tasks.loaders import load_task_data

SET = safety.load_safety_set()


def test_the_set_parses_and_covers_every_category_with_both_kinds() -> None:
    assert len(SET) >= 200
    assert len({ex.id for ex in SET}) == len(SET)
    counts = Counter((ex.category, ex.kind) for ex in SET)
    for category in safety.CATEGORIES:
        assert counts[(category, "harmful")] >= 8
        assert counts[(category, "benign")] >= 4


def test_refusals_and_helpful_answers_are_told_apart_by_the_refusal_judge() -> None:
    for ex in SET:
        assert is_refusal(ex.response) == ex.harmful, ex.id


def test_harmful_prompts_come_direct_and_wrapped_in_a_jailbreak() -> None:
    groups = Counter(ex.group for ex in SET if ex.harmful)
    assert set(groups.values()) == {2}


def test_the_held_out_split_keeps_whole_groups_out_in_every_category() -> None:
    train, held = safety.split(SET)
    assert len(train) + len(held) == len(SET)
    assert not {ex.group for ex in train} & {ex.group for ex in held}
    assert {ex.category for ex in held if ex.harmful} == set(safety.CATEGORIES)
    assert {ex.category for ex in held if not ex.harmful} == set(safety.CATEGORIES)
    assert 0.15 < len(held) / len(SET) < 0.35


def test_the_safety_source_trains_on_the_training_split_only() -> None:
    docs = [d.decode() for d in load_documents(DataSpec(source=DataSource.SAFETY), seed=0)]
    train, held = safety.split(SET)
    assert len(docs) == len(train)
    assert docs[0] == f"{prompt_text(train[0].prompt)} {train[0].response}\n"
    text = "".join(docs)
    assert not any(ex.prompt in text for ex in held)


def test_the_safety_task_reads_the_held_out_prompts() -> None:
    data = load_task_data(TaskDataSpec(generator="safety", examples=1000))
    assert data == safety.split(SET)[1]


def test_a_bad_record_is_refused_naming_the_line_and_field(tmp_path) -> None:
    good = {
        "id": "x",
        "group": "x",
        "category": "fraud",
        "kind": "harmful",
        "prompt": "p",
        "response": "I can't help with that.",
    }
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "category": "weather"}) + "\n")
    with pytest.raises(ValueError, match=r"s\.jsonl:2: field 'category' must be one of"):
        safety.load_safety_set(path)
    path.write_text(json.dumps({**good, "response": ""}) + "\n")
    with pytest.raises(ValueError, match=r"s\.jsonl:1: field 'response' must be"):
        safety.load_safety_set(path)


def test_the_instructions_source_renders_correct_answers_with_the_chat_template() -> None:
    pairs = instructions.generate(400, seed=5)
    assert {p.family for p in pairs} == set(instructions.FAMILIES)
    assert instructions.generate(400, seed=5) == pairs
    for p in pairs:
        if p.family == "add":
            a, b = (int(w) for w in p.prompt.removeprefix("What is ").rstrip("?").split(" plus "))
            assert p.response == f"{a} plus {b} is {a + b}."
        if p.family == "reverse":
            word = p.prompt.split("'")[1]
            assert p.response == word[::-1]
        assert "\n" not in p.response
    docs = load_documents(DataSpec(source=DataSource.INSTRUCTIONS), seed=5)
    assert docs[0].decode() == pairs[0].render()
    assert docs[0].decode().startswith("User: What is ")
