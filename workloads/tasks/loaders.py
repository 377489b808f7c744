"""Task data from a `TaskDataSpec`: a generator, or a JSONL file in its usual public layout.

Layouts (one JSON object per line):

- squad2 (SQuAD 2.0 as the `datasets` library flattens it):
  {"id", "context", "question", "answers": {"text": [...], "answer_start": [...]}};
  an empty `text` list (or "is_impossible": true) marks an unanswerable question.
- carina-qa: {"id"?, "context", "question", "answers": [...]} (what `grounded_qa` writes).
- mmlu: {"question", "choices": [...], "answer": 0-3 or "A"-"D", "subject"?}.
- hellaswag: {"ctx" (or "ctx_a" + "ctx_b"), "endings": [...], "label": int or "int"}.
- text: {"text": "..."} per document (perplexity).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from carina.workloads.alignment import safety
from carina.workloads.alignment.safety import SafetyExample
from carina.workloads.config import ExitCode, TaskDataSpec
from carina.workloads.errors import WorkerError
from carina.workloads.tasks import code_choice, grounded_qa
from carina.workloads.tasks.types import ChoiceExample, QAExample

TaskData = list[QAExample] | list[ChoiceExample] | list[SafetyExample] | list[str]


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; a bad line is a BAD_DATA error."""
    p = Path(path)
    if not p.is_file():
        raise WorkerError(ExitCode.NO_INPUT, f"data.path: no such file {path}")
    with p.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise WorkerError(ExitCode.BAD_DATA, f"{path}:{lineno}: not JSON: {e}") from e
            if not isinstance(obj, dict):
                raise WorkerError(ExitCode.BAD_DATA, f"{path}:{lineno}: not a JSON object")
            yield lineno, obj


def _field(obj: dict[str, Any], key: str, where: str) -> Any:
    if key not in obj:
        raise WorkerError(ExitCode.BAD_DATA, f"{where}: missing field {key!r}")
    return obj[key]


def qa_from_squad2(obj: dict[str, Any], where: str) -> QAExample:
    """One SQuAD 2.0 record; the distinct answer texts become the valid surface forms."""
    answers = obj.get("answers") or {}
    texts = answers.get("text", []) if isinstance(answers, dict) else answers
    if obj.get("is_impossible"):
        texts = []
    forms = tuple(dict.fromkeys(str(t).strip() for t in texts if str(t).strip()))
    return QAExample(
        str(_field(obj, "context", where)),
        str(_field(obj, "question", where)),
        forms,
        str(obj.get("id", where)),
    )


def choice_from_mmlu(obj: dict[str, Any], where: str) -> ChoiceExample:
    """One MMLU record: the question is the context, each choice a continuation."""
    choices = tuple(str(c) for c in _field(obj, "choices", where))
    answer = _field(obj, "answer", where)
    label = "ABCDEFGH".index(answer) if isinstance(answer, str) else int(answer)
    context = f"Question: {_field(obj, 'question', where)}\nAnswer:"
    return _checked(ChoiceExample(context, tuple(" " + c for c in choices), label), where)


def choice_from_hellaswag(obj: dict[str, Any], where: str) -> ChoiceExample:
    """One HellaSwag record: the context continued by each ending."""
    ctx = obj.get("ctx") or f"{obj.get('ctx_a', '')} {obj.get('ctx_b', '')}".strip()
    if not ctx:
        raise WorkerError(ExitCode.BAD_DATA, f"{where}: missing field 'ctx'")
    endings = tuple(" " + str(e) for e in _field(obj, "endings", where))
    return _checked(ChoiceExample(ctx, endings, int(_field(obj, "label", where))), where)


def _checked(ex: ChoiceExample, where: str) -> ChoiceExample:
    if not 0 <= ex.label < len(ex.choices) or len(ex.choices) < 2:
        raise WorkerError(ExitCode.BAD_DATA, f"{where}: label {ex.label} outside the choices")
    return ex


def load_file(path: str, fmt: str, limit: int) -> TaskData:
    """The first `limit` records of a JSONL file in layout `fmt`."""
    parsers = {
        "squad2": qa_from_squad2,
        "mmlu": choice_from_mmlu,
        "hellaswag": choice_from_hellaswag,
        "carina-qa": lambda o, w: QAExample(
            str(_field(o, "context", w)),
            str(_field(o, "question", w)),
            tuple(str(a) for a in o.get("answers", [])),
            str(o.get("id", w)),
        ),
        "text": lambda o, w: str(_field(o, "text", w)),
    }
    out: list[Any] = []
    for lineno, obj in read_jsonl(path):
        if len(out) >= limit:
            break
        out.append(parsers[fmt](obj, f"{path}:{lineno}"))
    if not out:
        raise WorkerError(ExitCode.BAD_DATA, f"{path}: no records")
    return out


def load_task_data(spec: TaskDataSpec) -> TaskData:
    """The examples `spec` names: generated when it has a generator, else read from its path."""
    if spec.generator == "grounded-qa":
        return grounded_qa.generate(spec.examples, spec.seed)
    if spec.generator == "code-choice":
        docs = code_choice.held_out_documents()
        return code_choice.generate(docs, spec.examples, spec.seed)
    if spec.generator == "python-stdlib":
        return code_choice.held_out_documents()[: spec.examples]
    if spec.generator == "safety":  # the held-out split: never in the `safety` data source
        return safety.split(safety.load_safety_set())[1][: spec.examples]
    if not spec.path or not spec.format:
        raise WorkerError(ExitCode.BAD_CONFIG, "data: set a generator, or a path and a format")
    return load_file(spec.path, spec.format, spec.examples)
