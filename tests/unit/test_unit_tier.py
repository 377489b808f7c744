"""The unit tier starts no process, opens no socket and never sleeps to wait (docs/testing.md).

Read from each test file's syntax tree, so a comment or a docstring that names these is fine.
What needs them lives in tests/integration/ (processes/: whatever starts processes or serves
on loopback), and waits there poll with a deadline.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent

# Modules that start processes or open sockets, and helpers that do it for a test.
FORBIDDEN_MODULES = {
    "asyncio.subprocess",
    "http.server",
    "multiprocessing",
    "socket",
    "socketserver",
    "subprocess",
    "carina.testcluster.processes",
}
FORBIDDEN_FROM = {
    "helm_chart": {"helm", "helm_binary", "render"},
    "carina.testcluster": {"TestCluster", "PrometheusServer", "S3Server"},
}
# Names that serve over a socket or wait for time to pass.
FORBIDDEN_NAMES = {"sleep", "start_http_server", "TCPSite", "wait_until", "Popen"}


def offences(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module]
            banned = FORBIDDEN_FROM.get(node.module, set())
            found += [
                f"{node.lineno}: imports {a.name} from {node.module}"
                for a in node.names
                if a.name in banned
            ]
            found += [
                f"{node.lineno}: imports {a.name}" for a in node.names if a.name in FORBIDDEN_NAMES
            ]
        elif isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_NAMES:
            found.append(f"{node.lineno}: uses .{node.attr}")
            continue
        else:
            continue
        found += [
            f"{node.lineno}: imports {m}"
            for m in modules
            if any(m == f or m.startswith(f + ".") for f in FORBIDDEN_MODULES)
        ]
    return found


@pytest.mark.parametrize("path", sorted(UNIT.rglob("*.py")), ids=lambda p: str(p.relative_to(UNIT)))
def test_no_processes_sockets_or_sleeps(path: Path) -> None:
    assert offences(path) == []


def test_every_test_file_name_is_unique_across_the_tiers() -> None:
    # One pytest session collects every tier, and test folders are not packages: two files of
    # one name would be imported as one module, and the session stops at collection.
    seen: dict[str, Path] = {}
    clashes = []
    for path in sorted(UNIT.parent.rglob("test_*.py")):
        if path.name in seen:
            clashes.append(f"{seen[path.name]} and {path}")
        seen.setdefault(path.name, path)
    assert not clashes, "rename one of each: " + "; ".join(clashes)
