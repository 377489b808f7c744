"""The server's event loop never waits on SQLite or a file: the store and the tokens file
are read in worker threads, so one slow disk read never holds up every other request."""

from __future__ import annotations

import ast
import asyncio
import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from builders import make_job
from fastapi.testclient import TestClient
from server_support import ADMIN, ALICE, auth

from carina.platform.controlplane.backends import embedded
from carina.platform.controlplane.backends.embedded import TokenFile
from carina.platform.embedded.store import Store

JOBS = "/api/v1/namespaces/team-a/trainingjobs"
# What reads or writes the disk: the store, the tokens file, and paths.
BLOCKING_ROOTS = ("self.store", "self.tokens")
BLOCKING_PATH_METHODS = {"exists", "open", "read_text", "read_bytes", "stat", "write_text"}


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else "?"


def _blocking_calls(function: ast.AsyncFunctionDef, blocking_methods: set[str]) -> list[str]:
    """Calls in an async function that run a blocking method right there, on the loop."""
    found = []
    for node in ast.walk(function):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if (
            name.startswith(BLOCKING_ROOTS)
            or name in {f"self.{m}" for m in blocking_methods}
            or name.rsplit(".", 1)[-1] in BLOCKING_PATH_METHODS
        ):
            found.append(f"{function.name}: {name}() at line {node.lineno}")
    return found


def test_no_async_method_of_the_local_backend_calls_the_store_directly() -> None:
    tree = ast.parse(Path(inspect.getfile(embedded)).read_text())
    backend = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "LocalBackend")
    methods = [n for n in backend.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    # The plain methods that touch the store (at any depth) block too.
    blocking = {
        m.name for m in methods if isinstance(m, ast.FunctionDef) and "self.store" in ast.unparse(m)
    }
    grew = True
    while grew:
        callers = {
            m.name
            for m in methods
            if isinstance(m, ast.FunctionDef)
            and any(f"self.{b}(" in ast.unparse(m) for b in blocking)
        }
        grew = not callers <= blocking
        blocking |= callers
    found = [
        call
        for m in methods
        if isinstance(m, ast.AsyncFunctionDef)
        for call in _blocking_calls(m, blocking)
    ]
    assert found == []


def _off_the_loop(method: Callable[..., Any], seen: list[str]) -> Callable[..., Any]:
    @functools.wraps(method)
    def checked(*args: Any, **kwargs: Any) -> Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass  # a worker thread: no loop runs here
        else:
            seen.append(method.__name__)
        return method(*args, **kwargs)

    return checked


@pytest.fixture
def on_loop(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The store and tokens-file methods called on a thread that runs an event loop."""
    seen: list[str] = []
    for cls in (Store, TokenFile):
        for name, method in list(vars(cls).items()):
            if inspect.isfunction(method) and not name.startswith("__"):
                monkeypatch.setattr(cls, name, _off_the_loop(method, seen))
    return seen


def test_requests_read_and_write_the_store_off_the_event_loop(
    client: TestClient, on_loop: list[str]
) -> None:
    assert client.post(JOBS, json=make_job("demo"), headers=auth(ALICE)).status_code == 201
    for path in ("", "/demo", "/demo/events", "/demo/metrics", "/demo/workers/0/log"):
        client.get(JOBS + path, headers=auth(ALICE))
    assert client.post(JOBS + "/demo/suspend", headers=auth(ALICE)).status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/api/v1/clusterqueues", headers=auth(ADMIN)).status_code == 200
    assert client.delete(JOBS + "/demo", headers=auth(ALICE)).status_code == 200
    assert on_loop == []
