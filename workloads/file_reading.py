"""Reading corpus files: one file's bytes, and a stream of documents capped at a byte budget.

`data.read_documents` (a file per document) and `repository_packing.repository_documents` (a
repository per document) both read this way, so a corpus's `maxBytes` means the same in both.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from carina.workloads.config import ExitCode
from carina.workloads.errors import WorkerError


def read_file(path: Path) -> bytes:
    """The file's bytes; BAD_DATA naming the file when it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as e:
        raise WorkerError(ExitCode.BAD_DATA, f"cannot read {path}: {e}") from e


def take_bytes(docs: Iterable[bytes], max_bytes: int | None) -> list[bytes]:
    """The documents in order until `max_bytes` in all, the last one cut to fit; empty ones
    dropped. `docs` is consumed lazily: nothing past the budget is read."""
    out: list[bytes] = []
    total = 0
    for doc in docs:
        if max_bytes is not None and total + len(doc) > max_bytes:
            doc = doc[: max_bytes - total]
        if doc:
            out.append(doc)
            total += len(doc)
        if max_bytes is not None and total >= max_bytes:
            break
    return out
