"""The trials of a sweep: their names, the synthetic objective, and the ledger of results.

The ledger (`sweep/ledger.json` under the job's checkpoint URI) is the sweep's memory across
restarts: the driver records each finished trial there as Tune reports it, and a restarted
job runs only the trials the ledger lacks. `sweep/starts.json` counts every trial start, so a
rerun of a finished trial would show.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

from carina.workloads.config import SweepConfig
from carina.workloads.runtime.storage import Store

LEDGER_KEY = "sweep/ledger.json"
STARTS_KEY = "sweep/starts.json"


@dataclass(frozen=True)
class Trial:
    """One point of the grid."""

    batch_size: int
    tokens: int
    lr: float

    @property
    def key(self) -> str:
        return f"b{self.batch_size}-t{self.tokens}-lr{self.lr:.6g}"

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "batchSize": self.batch_size, "tokens": self.tokens, "lr": self.lr}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Trial:
        return cls(int(doc["batchSize"]), int(doc["tokens"]), float(doc["lr"]))


def grid(cfg: SweepConfig) -> list[Trial]:
    """The sweep's trials in the config's order."""
    return [Trial(b, t, lr) for b, t, lr in cfg.grid()]


def synthetic_loss(cfg: SweepConfig, trial: Trial) -> float:
    """1 + k·(ln η − ln η*)² with η* = β·a·T^b: the optimum is the configured power law."""
    syn = cfg.synthetic
    if syn.seconds:
        time.sleep(syn.seconds)
    best = trial.batch_size * syn.a * trial.tokens**syn.b
    return 1.0 + syn.curvature * (math.log(trial.lr) - math.log(best)) ** 2


class Ledger:
    """Finished trials and trial starts, kept as two JSON documents in a store.

    Only the driver writes them (one process), and each write replaces the whole document
    atomically (`Store.put_bytes`), so a reader sees the old or the new one.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.results: dict[str, dict[str, Any]] = self._read(LEDGER_KEY)
        self.starts: dict[str, int] = self._read(STARTS_KEY)

    def _read(self, key: str) -> dict[str, Any]:
        raw = self.store.get_bytes(key)
        if raw is None:
            return {}
        doc = json.loads(raw)
        return doc if isinstance(doc, dict) else {}

    def _write(self, key: str, doc: dict[str, Any]) -> None:
        self.store.put_bytes(json.dumps(doc, indent=1, sort_keys=True).encode(), key)

    def finished(self, trial: Trial) -> bool:
        return trial.key in self.results

    def record_start(self, trial: Trial) -> None:
        self.starts[trial.key] = self.starts.get(trial.key, 0) + 1
        self._write(STARTS_KEY, self.starts)

    def record_result(self, trial: Trial, loss: float, seconds: float, node: str) -> None:
        self.results[trial.key] = {
            **trial.to_dict(),
            "loss": loss if math.isfinite(loss) else None,
            "seconds": round(seconds, 3),
            "node": node,
        }
        self._write(LEDGER_KEY, self.results)
