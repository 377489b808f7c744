"""Repository-level packing and long-document upsampling (long-context data).

Stallone et al. 2024 (arXiv 2407.13739, §2) train long-context code models on whole
repositories: the files of one repository concatenated in an order where a file comes after
the files it imports, so one long window holds a definition and its uses. Here a repository is
a top-level folder under the corpus root (a package of the standard library, a project under a
`files` glob's common folder, or that folder itself when it is a package); a module at the root
is a repository of its own.

Order within a repository: files that are not Python first (READMEs, build files: the paper's
"documentation and build files first"), then each package's `__init__.py` (outer packages
first), then the modules in import order: Kahn's algorithm over the imports between the
repository's own modules, taking the first ready module in path order, and when a cycle
leaves none ready, the first remaining one in path order. Each file starts with a header
line naming its path, so a window that crosses files knows where it is.
"""

from __future__ import annotations

import math
import os
import random
import re
from collections.abc import Sequence
from pathlib import Path

from carina.workloads.config import UpsampleSpec
from carina.workloads.file_reading import read_file, take_bytes

_IMPORT = re.compile(
    rb"^[ \t]*(?:from[ \t]+(\.*)([\w.]*)[ \t]+import[ \t]+([\w., \t()]+)"
    rb"|import[ \t]+([\w., \t]+))",
    re.M,
)


def repository_of(path: Path, root: Path) -> str:
    """The repository `path` belongs to: its first folder under `root`, or its own name."""
    parts = path.relative_to(root).parts
    return parts[0]


def module_name(relative: Path) -> str:
    """`json/decoder.py` -> `json.decoder`; `json/__init__.py` -> `json`."""
    parts = list(relative.with_suffix("").parts)
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: bytes, relative: Path) -> set[str]:
    """Dotted names `source` imports, relative imports resolved against its package.

    `from a.b import c` yields both `a.b` and `a.b.c` (c may be a module or a name): only
    names that are modules of the same repository count as dependencies.
    """
    package = module_name(relative).split(".")
    if relative.name != "__init__.py":
        package = package[:-1]
    found: set[str] = set()
    for m in _IMPORT.finditer(source):
        dots, base, names, plain = m.group(1), m.group(2), m.group(3), m.group(4)
        if plain is not None:
            for name in plain.decode(errors="replace").split(","):
                found.add(name.split(" as ")[0].strip())
            continue
        if dots:
            anchor = package[: len(package) - (len(dots) - 1)] if len(dots) > 1 else package
            prefix = ".".join([*anchor, base.decode(errors="replace")] if base else anchor)
        else:
            prefix = base.decode(errors="replace")
        if prefix:
            found.add(prefix)
        for name in names.decode(errors="replace").strip("() \t").split(","):
            name = name.split(" as ")[0].strip(" \t()")
            if name and name != "*":
                found.add(f"{prefix}.{name}" if prefix else name)
    return found


def repository_order(files: Sequence[tuple[Path, bytes]]) -> list[int]:
    """Indices of `files` (relative paths and contents) in the order described above."""
    by_path = sorted(range(len(files)), key=lambda i: files[i][0].as_posix())
    docs = [i for i in by_path if files[i][0].suffix != ".py"]
    inits = sorted(
        (i for i in by_path if files[i][0].name == "__init__.py"),
        key=lambda i: (len(files[i][0].parts), files[i][0].as_posix()),
    )
    modules = [i for i in by_path if files[i][0].suffix == ".py" and i not in set(inits)]
    names = {module_name(files[i][0]): i for i in modules}
    needs: dict[int, set[int]] = {}
    for i in modules:
        imported = imported_modules(files[i][1], files[i][0])
        needs[i] = {names[n] for n in imported if n in names and names[n] != i}
    ordered: list[int] = []
    placed: set[int] = set()
    remaining = list(modules)  # path order
    while remaining:
        ready = next((i for i in remaining if needs[i] <= placed), None)
        chosen = ready if ready is not None else remaining[0]  # a cycle: path order breaks it
        ordered.append(chosen)
        placed.add(chosen)
        remaining.remove(chosen)
    return docs + inits + ordered


def repository_documents(paths: Sequence[Path], max_bytes: int | None) -> list[bytes]:
    """One document per repository, repositories in name order, up to `max_bytes` in all."""
    if not paths:
        return []
    root = Path(os.path.commonpath([p.parent for p in paths]))
    if root / "__init__.py" in set(paths):  # the files are one package: pack it whole
        root = root.parent
    groups: dict[str, list[Path]] = {}
    for path in paths:
        groups.setdefault(repository_of(path, root), []).append(path)

    def packed(name: str) -> bytes:
        files = [(p.relative_to(root), read_file(p)) for p in groups[name]]
        return b"\n".join(
            b"# " + files[i][0].as_posix().encode() + b"\n" + files[i][1]
            for i in repository_order(files)
        )

    return take_bytes((packed(name) for name in sorted(groups)), max_bytes)


def upsample_long(docs: list[bytes], spec: UpsampleSpec, seed: int) -> list[bytes]:
    """Each document of at least `minBytes` `factor` times on average, copies side by side.

    A fractional factor gives floor(factor) or one more copy, by a draw seeded by `seed`, so
    every rank builds the same corpus.
    """
    rng = random.Random(seed * 7_919 + 17)
    whole, fraction = math.floor(spec.factor), spec.factor - math.floor(spec.factor)
    out: list[bytes] = []
    for doc in docs:
        copies = 1
        if len(doc) >= spec.min_bytes:
            copies = whole + (1 if rng.random() < fraction else 0)
        out.extend([doc] * max(1, copies))
    return out
