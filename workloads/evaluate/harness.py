"""Run one evaluation task on one model: the data loaded once, a `TaskResult` out.

- perplexity: exp(mean NLL per token) over text windows (lower is better);
- multiple-choice: the choice with the highest log-likelihood per token wins (accuracy, and
  `accuracyRaw` with the plain sum); MMLU, HellaSwag and code-choice items alike;
- refusal: the model answers each question greedily; "abstained" is the positive class, so
  precision, recall and F1 measure unanswerable-question detection (the SSR paper's task);
  `answerAccuracy` is the rule judge's acceptance on the answerable ones;
- infill: exact match of generated middles given prefix and suffix, PSM and SPM (infill.py);
- safety: refusal of held-out harmful prompts against over-refusal of benign ones (safety.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from carina.workloads.alignment.safety import SafetyExample
from carina.workloads.config import EvalTask, ExitCode
from carina.workloads.data import ByteTokenizer
from carina.workloads.errors import WorkerError
from carina.workloads.evaluate import metrics
from carina.workloads.evaluate.infill import run_infill
from carina.workloads.evaluate.safety import run_safety
from carina.workloads.evaluate.scoring import continuation_logprobs, text_nll
from carina.workloads.judges import JudgeItem
from carina.workloads.judges.normalize import is_abstention, token_f1
from carina.workloads.judges.rule import RuleJudge
from carina.workloads.models.generation import generate_answers
from carina.workloads.models.transformer import Transformer
from carina.workloads.tasks.loaders import TaskData
from carina.workloads.tasks.types import ChoiceExample, QAExample, qa_prompt

PRIMARY = {
    "perplexity": "perplexity",
    "multiple-choice": "accuracy",
    "refusal": "f1",
    "infill": "exactMatch",
    "safety": "safetyScore",
}


@dataclass(frozen=True)
class TaskResult:
    """One task's metrics on one model; `score` is the primary metric."""

    name: str
    kind: str
    metric: str
    score: float
    higher_is_better: bool
    n: int
    target: bool = False
    metrics: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "metric": self.metric,
            "score": self.score,
            "higherIsBetter": self.higher_is_better,
            "n": self.n,
            "target": self.target,
            "metrics": self.metrics,
        }


def _expect(data: TaskData, kind: type, task: EvalTask) -> list[Any]:
    if not data or not all(isinstance(x, kind) for x in data):
        raise WorkerError(
            ExitCode.BAD_CONFIG,
            f"tasks[{task.name}]: a {task.kind} task needs {kind.__name__} data",
        )
    return list(data)


def run_perplexity(model: Transformer, tok: ByteTokenizer, texts: list[str]) -> dict[str, float]:
    total, count = text_nll(model, tok, texts)
    return {"perplexity": metrics.perplexity(total, count), "tokens": float(count)}


def run_choice(
    model: Transformer, tok: ByteTokenizer, items: list[ChoiceExample], batch_size: int
) -> dict[str, float]:
    pairs = [(ex.context, c) for ex in items for c in ex.choices]
    scored = continuation_logprobs(model, tok, pairs, batch_size)
    raw, norm, k = [], [], 0
    for ex in items:
        chunk = scored[k : k + len(ex.choices)]
        k += len(ex.choices)
        raw.append([lp for lp, _ in chunk])
        norm.append([lp / max(n, 1) for lp, n in chunk])
    labels = [ex.label for ex in items]
    return {
        "accuracy": metrics.choice_accuracy(norm, labels),
        "accuracyRaw": metrics.choice_accuracy(raw, labels),
        "chance": metrics.mean([1 / len(ex.choices) for ex in items]),
    }


def refusal_metrics(examples: list[QAExample], answers: list[str]) -> dict[str, float]:
    """Refusal P/R/F1, answer accuracy and token F1 from the answers given (pure)."""
    abstained = [is_abstention(a) for a in answers]
    unanswerable = [not ex.answerable for ex in examples]
    prf = metrics.precision_recall_f1(abstained, unanswerable)
    answerable = [(ex, a) for ex, a in zip(examples, answers, strict=True) if ex.answerable]
    verdicts = RuleJudge().judge([JudgeItem(ex.question, ex.answers, a) for ex, a in answerable])
    f1s = [max(token_f1(a, g) for g in ex.answers) for ex, a in answerable]
    return {
        "precision": prf.precision,
        "recall": prf.recall,
        "f1": prf.f1,
        "answerAccuracy": metrics.mean([float(v.accepted) for v in verdicts]),
        "answerTokenF1": metrics.mean(f1s),
        "abstentionRate": metrics.mean([float(a) for a in abstained]),
    }


def run_refusal(
    model: Transformer,
    tok: ByteTokenizer,
    examples: list[QAExample],
    max_new: int,
    batch_size: int,
) -> dict[str, float]:
    answers = generate_answers(model, tok, [qa_prompt(e) for e in examples], max_new, batch_size)
    return refusal_metrics(examples, answers)


def fim_tokenizer(model: Transformer, task: EvalTask) -> ByteTokenizer:
    """The byte tokenizer with FIM sentinels, if `model`'s vocabulary has them."""
    tok = ByteTokenizer(fim=True)
    if model.arch.vocab_size < tok.vocab_size:
        raise WorkerError(
            ExitCode.BAD_CONFIG,
            f"tasks[{task.name}]: an infill task needs a model pretrained with data.fim "
            f"(vocabulary {tok.vocab_size}); this one has {model.arch.vocab_size} tokens",
        )
    return tok


def run_task(
    model: Transformer, task: EvalTask, data: TaskData, batch_size: int, max_new_tokens: int
) -> TaskResult:
    """`task` on `model` with its already loaded `data`."""
    tok = ByteTokenizer()
    if task.kind == "perplexity":
        values = run_perplexity(model, tok, _expect(data, str, task))
    elif task.kind == "multiple-choice":
        values = run_choice(model, tok, _expect(data, ChoiceExample, task), batch_size)
    elif task.kind == "infill":
        fim_tok = fim_tokenizer(model, task)
        sentinels = fim_tok.fim_sentinels()
        assert sentinels is not None
        docs = _expect(data, str, task)
        n = task.data.examples  # spans, cut from the documents in turn
        values = run_infill(model, fim_tok, sentinels, docs, task.data.seed, n, batch_size)
    elif task.kind == "safety":
        examples = _expect(data, SafetyExample, task)
        values = run_safety(model, tok, examples, max_new_tokens, batch_size)
    else:
        items = _expect(data, QAExample, task)
        values = run_refusal(model, tok, items, max_new_tokens, batch_size)
    primary = PRIMARY[task.kind]
    return TaskResult(
        task.name,
        task.kind,
        primary,
        values[primary],
        task.kind != "perplexity",
        len(data),
        task.target,
        values,
    )
