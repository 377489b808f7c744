"""Task data for fine-tuning and evaluation: generated (no download) or loaded from JSONL.

Two example types cover every task: `QAExample` (document-grounded questions, answerable or
not, each answer with its valid surface forms) and `ChoiceExample` (a context and candidate
continuations, one right). `load_task_data` turns a `TaskDataSpec` into a list of them.
"""

from carina.workloads.tasks.types import (
    ABSTENTION,
    ChoiceExample,
    QAExample,
    qa_prompt,
    qa_target,
)

__all__ = ["ABSTENTION", "ChoiceExample", "QAExample", "qa_prompt", "qa_target"]
