"""The http judge against a real server on loopback speaking the OpenAI chat-completions protocol.

What only a socket shows: request bodies and headers on the wire, a read timeout, a 503 retried,
a refused connection. The judge's logic without a socket is in tests/unit/judges/. The server
thread is up once the fixture returns (the socket listens from the constructor on), and a slow
reply waits on an event the test sets, never on a fixed sleep.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from carina.workloads.config import JudgeKind, JudgeSpec
from carina.workloads.judges import JudgeItem, Verdict, build_judge
from carina.workloads.judges.http import HttpJudge

SLOW_REPLY_DEADLINE = 10.0  # a SLOW reply is held until the test releases it, at most this long


class ChatServer(ThreadingHTTPServer):
    """Grades by the candidate in the user message; some candidates trigger failures."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ChatHandler)
        self.requests: list[dict[str, Any]] = []
        self.headers_seen: list[dict[str, str]] = []
        self.flaky_failures = 0
        self.release_slow = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class ChatHandler(BaseHTTPRequestHandler):
    server: ChatServer

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def do_POST(self) -> None:
        if self.path != "/v1/chat/completions":
            self._send(404, {"error": "not found"})
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)
        self.server.headers_seen.append(dict(self.headers))
        user = body["messages"][-1]["content"]
        candidate = user.split("Candidate answer: ")[1].split("\n")[0]
        if candidate == "SLOW":
            self.server.release_slow.wait(SLOW_REPLY_DEADLINE)
        if candidate == "FLAKY" and self.server.flaky_failures < 1:
            self.server.flaky_failures += 1
            self._send(503, {"error": "overloaded"})
            return
        content = "ACCEPT" if candidate in ("Rome", "FLAKY", "SLOW") else "REJECT."
        self._send(
            200,
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": content},
                    }
                ],
            },
        )

    def _send(self, status: int, obj: dict[str, Any]) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server() -> Iterator[ChatServer]:
    srv = ChatServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    yield srv
    srv.release_slow.set()  # a held reply ends now; its client has long given up
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=SLOW_REPLY_DEADLINE)


def ask(judge: HttpJudge, *candidates: str) -> list[Verdict]:
    return judge.judge([JudgeItem("Where does Ada live?", ("Rome",), c) for c in candidates])


def test_verdicts_follow_the_endpoints_replies(server: ChatServer) -> None:
    judge = HttpJudge(server.url, model="grader")
    assert [v.accepted for v in ask(judge, "Rome", "Oslo")] == [True, False]
    request = server.requests[0]
    assert request["model"] == "grader"
    assert request["temperature"] == 0
    assert request["messages"][0]["role"] == "system"
    assert "Reference answer: Rome" in request["messages"][-1]["content"]


def test_timeout_is_a_rejection_with_a_clear_error(server: ChatServer) -> None:
    judge = HttpJudge(server.url, timeout=0.2, retries=1)
    verdict = ask(judge, "SLOW")[0]
    assert not verdict.accepted
    assert verdict.error is not None
    assert "timed out" in verdict.error
    assert "2 tries" in verdict.error


def test_server_errors_are_retried(server: ChatServer) -> None:
    judge = HttpJudge(server.url, retries=2)
    verdict = ask(judge, "FLAKY")[0]
    assert verdict.accepted
    assert server.flaky_failures == 1


def test_unreachable_endpoint_is_a_rejection_not_a_crash() -> None:
    with socket.socket() as s:  # a port nothing listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        judge = HttpJudge(f"http://127.0.0.1:{port}/v1", timeout=0.5, retries=0)
        verdict = ask(judge, "Rome")[0]
    assert not verdict.accepted
    assert verdict.error is not None
    assert "cannot reach" in verdict.error


def test_spec_builds_an_http_judge_that_sends_the_bearer_token(
    server: ChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARINA_JUDGE_TOKEN", "s3cret")
    spec = JudgeSpec(kind=JudgeKind.HTTP, url=server.url, api_key_env="CARINA_JUDGE_TOKEN")
    judge = build_judge(spec)
    assert [v.accepted for v in judge.judge([JudgeItem("q", ("Rome",), "Rome")])] == [True]
    assert server.headers_seen[0]["Authorization"] == "Bearer s3cret"
