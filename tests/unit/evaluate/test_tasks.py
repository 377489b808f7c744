"""Task data: the grounded-QA and code-choice generators and the JSONL loaders."""

from __future__ import annotations

from pathlib import Path

import pytest

from carina.workloads.config import ExitCode, TaskDataSpec
from carina.workloads.errors import WorkerError
from carina.workloads.tasks import code_choice, grounded_qa
from carina.workloads.tasks.loaders import load_file, load_task_data
from carina.workloads.tasks.types import ABSTENTION, ChoiceExample, QAExample

DATA = Path(__file__).parents[2] / "data"


def test_grounded_qa_is_deterministic_and_mixes_answerable_and_unanswerable():
    a, b = grounded_qa.generate(200, seed=3), grounded_qa.generate(200, seed=3)
    assert a == b
    unanswerable = sum(not ex.answerable for ex in a)
    assert 50 <= unanswerable <= 110  # about 40%
    assert grounded_qa.generate(5, seed=4) != a[:5]


def test_answerable_questions_are_grounded_in_their_document_with_several_forms():
    for ex in grounded_qa.generate(100, seed=1):
        if ex.answerable:
            assert len(ex.answers) >= 2
            assert any(form in ex.context for form in ex.answers)
        else:
            assert ex.gold == ABSTENTION


def stated_prefix(question: str) -> str:
    """The sentence start that would state the answer to `question` in a document."""
    person = next(name for name in grounded_qa.NAMES if f" {name} " in f" {question} ")
    if "live" in question:
        return f"{person} lives in"
    if "born" in question:
        return f"{person} was born"
    if "colour" in question:
        return f"{person} likes the colour"
    return f"{person} has"


def test_unanswerable_questions_ask_for_something_the_document_does_not_state():
    examples = grounded_qa.generate(200, seed=2)
    for ex in examples:
        stated = stated_prefix(ex.question) in ex.context
        assert stated == ex.answerable, ex


def test_pretraining_documents_use_the_non_canonical_forms():
    docs = grounded_qa.pretraining_documents(20, seed=0)
    assert all(d.count("\nAnswer: ") == 1 and d.endswith("\n") for d in docs)
    answers = [d.rsplit("Answer: ", 1)[1].strip() for d in docs]
    assert not any(a.isdigit() and int(a) <= 12 for a in answers)  # numbers come spelled out


def test_code_choice_items_finish_the_line_with_one_true_ending():
    doc = "\n".join(f"    value_{i} = compute_something({i}, factor={i * 3})" for i in range(40))
    items = code_choice.generate([doc], n=10, seed=0)
    assert len(items) == 10
    lines = set(doc.splitlines())
    for item in items:
        assert len(item.choices) == 4
        assert len(set(item.choices)) == 4
        head = item.context.splitlines()[-1]
        assert head + item.choices[item.label] in lines
        wrong = [c for k, c in enumerate(item.choices) if k != item.label]
        assert all(head + c not in lines for c in wrong)


def test_lines_are_cut_after_a_boundary_near_the_middle():
    assert code_choice.split_line("    result = compute(alpha, beta)") == (
        "    result = compute(",
        "alpha, beta)",
    )


def test_squad2_loader_reads_answers_and_unanswerables():
    items = load_file(str(DATA / "squad2_sample.jsonl"), "squad2", limit=10)
    assert [type(x) for x in items] == [QAExample] * 4
    assert items[0].answers == ("France",)  # duplicates folded
    assert items[1].answers == ("10th and 11th centuries", "in the 10th and 11th centuries")
    assert not items[2].answerable
    assert not items[3].answerable


def test_mmlu_loader_takes_index_or_letter_answers():
    items = load_file(str(DATA / "mmlu_sample.jsonl"), "mmlu", limit=10)
    assert [x.label for x in items] == [1, 2, 0]
    assert items[0].choices[1] == " 5"
    assert items[0].context.startswith("Question: What is 2 + 3?")


def test_hellaswag_loader_reads_ctx_or_its_two_halves():
    items = load_file(str(DATA / "hellaswag_sample.jsonl"), "hellaswag", limit=10)
    assert [x.label for x in items] == [3, 3]
    assert items[1].context.endswith("presenting them. the pans")
    assert all(isinstance(x, ChoiceExample) and len(x.choices) == 4 for x in items)


def test_limit_and_text_format():
    assert len(load_file(str(DATA / "squad2_sample.jsonl"), "squad2", limit=2)) == 2
    assert load_file(str(DATA / "text_sample.jsonl"), "text", 5)[0].startswith("def add")


def test_bad_files_are_data_errors_with_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "choices": ["a", "b"], "answer": 0}\nnot json\n')
    with pytest.raises(WorkerError, match=r"bad.jsonl:2") as err:
        load_file(str(bad), "mmlu", 10)
    assert err.value.exit_code == ExitCode.BAD_DATA
    with pytest.raises(WorkerError) as missing:
        load_file(str(tmp_path / "absent.jsonl"), "mmlu", 10)
    assert missing.value.exit_code == ExitCode.NO_INPUT


def test_spec_without_generator_or_path_is_a_config_error():
    with pytest.raises(WorkerError) as err:
        load_task_data(TaskDataSpec())
    assert err.value.exit_code == ExitCode.BAD_CONFIG
