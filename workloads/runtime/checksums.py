"""Checkpoint integrity: the rule a checkpoint must meet before any of it is loaded.

A checkpoint is intact when its manifest is a JSON object of the shape `checkpoint.save`
writes, every file name in it is a plain name, and every file it lists exists with the size
and sha256 its `checksums` record (format 2 on). Manifests written before format 2 have no
checksums: their files are only required to exist, and nothing vouches for their bytes.

Each function returns why something is wrong, or None: deciding what to do about it (skip
to an older checkpoint, or fail) is the caller's.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

# What a manifest needs for a load: the fields `checkpoint.load` and the runners read.
_REQUIRED = {"step": int, "files": list, "architecture": dict, "trainer": dict}
_CHUNK = 1 << 20

RULE = (
    "a checkpoint is intact when its manifest.json is valid and every file it lists has the "
    "size and sha256 the manifest records"
)


def digest(path: Path) -> dict[str, Any]:
    """{"sha256": hex digest, "size": bytes} of a file."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return {"sha256": h.hexdigest(), "size": size}


def parse_manifest(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """(manifest, None) when `raw` is a usable manifest, else (None, why not)."""
    try:
        doc = json.loads(raw)
    except ValueError as e:
        return None, f"not valid JSON ({e})"
    if not isinstance(doc, dict):
        return None, "not a JSON object"
    for key, kind in _REQUIRED.items():
        if not isinstance(doc.get(key), kind):
            return None, f"{key!r} is missing or not a {kind.__name__}"
    for name in doc["files"]:
        if not _plain_name(name):
            return None, f"lists {name!r}, which is not a plain file name"
    checksums = doc.get("checksums")
    if checksums is not None:
        if not isinstance(checksums, dict) or set(checksums) != set(doc["files"]):
            return None, "'checksums' does not cover exactly the files it lists"
        for name, entry in checksums.items():
            if not (
                isinstance(entry, dict)
                and isinstance(entry.get("sha256"), str)
                and isinstance(entry.get("size"), int)
            ):
                return None, f"the checksum of {name} is not {{sha256, size}}"
    return doc, None


def _plain_name(name: object) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and not set(name) & {"/", "\\"}


def check_file(path: Path, expected: dict[str, Any] | None) -> str | None:
    """Why the file at `path` fails its manifest entry (None: it passes).

    Without an entry (a manifest from before checksums) the file only has to exist.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing (the manifest lists it)"
    if expected is None:
        return None
    if size != expected["size"]:
        return f"size {size} bytes, the manifest records {expected['size']} (truncated or replaced)"
    actual = digest(path)["sha256"]
    if actual != expected["sha256"]:
        return (
            f"sha256 {actual[:16]}... differs from the manifest's {expected['sha256'][:16]}... "
            "(same size, changed bytes)"
        )
    return None
