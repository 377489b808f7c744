"""Reading worker logs on this machine: the last lines of a file, read from its end."""

from __future__ import annotations

import os
from pathlib import Path


def tail(path: Path, lines: int, block: int = 64 * 1024) -> str:
    """The last `lines` lines of a file, reading backwards from its end."""
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        data = b""
        while size > 0 and data.count(b"\n") <= lines:
            step = min(block, size)
            size -= step
            f.seek(size)
            data = f.read(step) + data
    text = data.decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:]) + ("\n" if text.endswith("\n") else "")
