"""The http judge against a real local server speaking the OpenAI chat-completions protocol."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from carina.workloads.config import JudgeKind, JudgeSpec
from carina.workloads.errors import WorkerError
from carina.workloads.judges import JudgeItem, build_judge
from carina.workloads.judges.http import HttpJudge, chat_url, parse_verdict, render_prompt


class ChatServer(ThreadingHTTPServer):
    """Grades by the candidate in the user message; some candidates trigger failures."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ChatHandler)
        self.requests: list[dict[str, Any]] = []
        self.headers_seen: list[dict[str, str]] = []
        self.flaky_failures = 0

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
            time.sleep(1.0)
        if candidate == "FLAKY" and self.server.flaky_failures < 1:
            self.server.flaky_failures += 1
            self._send(503, {"error": "overloaded"})
            return
        if candidate == "GARBAGE":
            content = "Well, it depends on what you mean."
        elif candidate == "NOJSON":
            self._send_raw(200, b"<html>oops</html>")
            return
        else:
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
        self._send_raw(status, json.dumps(obj).encode())

    def _send_raw(self, status: int, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server() -> Iterator[ChatServer]:
    srv = ChatServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def ask(judge: HttpJudge, *candidates: str):
    return judge.judge([JudgeItem("Where does Ada live?", ("Rome",), c) for c in candidates])


def test_verdicts_follow_the_endpoints_replies(server: ChatServer):
    judge = HttpJudge(server.url, model="grader")
    assert [v.accepted for v in ask(judge, "Rome", "Oslo")] == [True, False]
    request = server.requests[0]
    assert request["model"] == "grader"
    assert request["temperature"] == 0
    assert request["messages"][0]["role"] == "system"
    assert "Reference answer: Rome" in request["messages"][-1]["content"]


def test_prompt_template_fills_question_gold_and_candidate(server: ChatServer):
    template = 'Q={question} G={gold} {"json": "braces stay"}\nCandidate answer: {candidate}\n'
    judge = HttpJudge(server.url, template=template)
    ask(judge, "Rome")
    sent = server.requests[0]["messages"][-1]["content"]
    assert sent == (
        'Q=Where does Ada live? G=Rome {"json": "braces stay"}\nCandidate answer: Rome\n'
    )


def test_unanswerable_gold_is_spelled_out_for_the_grader():
    text = render_prompt("{gold}", JudgeItem("q", (), "x"))
    assert text.startswith("unanswerable")


def test_timeout_is_a_rejection_with_a_clear_error(server: ChatServer):
    judge = HttpJudge(server.url, timeout=0.2, retries=1)
    verdict = ask(judge, "SLOW")[0]
    assert not verdict.accepted
    assert verdict.error is not None
    assert "timed out" in verdict.error
    assert "2 tries" in verdict.error


def test_malformed_reply_is_rejected_and_the_batch_goes_on(server: ChatServer):
    judge = HttpJudge(server.url)
    verdicts = ask(judge, "GARBAGE", "Rome", "NOJSON")
    assert not verdicts[0].accepted
    assert verdicts[0].error is not None
    assert "does not start with ACCEPT or REJECT" in verdicts[0].error
    assert verdicts[1].accepted
    assert verdicts[1].error is None
    assert verdicts[2].error is not None
    assert "not JSON" in verdicts[2].error


def test_server_errors_are_retried(server: ChatServer):
    judge = HttpJudge(server.url, retries=2)
    verdict = ask(judge, "FLAKY")[0]
    assert verdict.accepted
    assert server.flaky_failures == 1


def test_unreachable_endpoint_is_a_rejection_not_a_crash():
    judge = HttpJudge("http://127.0.0.1:9/v1", timeout=0.5, retries=0)
    verdict = ask(judge, "Rome")[0]
    assert not verdict.accepted
    assert verdict.error is not None
    assert "cannot reach" in verdict.error


def test_spec_builds_an_http_judge_with_a_bearer_token(server: ChatServer, monkeypatch):
    monkeypatch.setenv("CARINA_JUDGE_TOKEN", "s3cret")
    spec = JudgeSpec(kind=JudgeKind.HTTP, url=server.url, api_key_env="CARINA_JUDGE_TOKEN")
    judge = build_judge(spec)
    assert [v.accepted for v in judge.judge([JudgeItem("q", ("Rome",), "Rome")])] == [True]
    assert server.headers_seen[0]["Authorization"] == "Bearer s3cret"


def test_missing_token_variable_is_a_config_error(monkeypatch):
    monkeypatch.delenv("CARINA_JUDGE_TOKEN", raising=False)
    spec = JudgeSpec(kind=JudgeKind.HTTP, url="http://x/v1", api_key_env="CARINA_JUDGE_TOKEN")
    with pytest.raises(WorkerError, match="apiKeyEnv"):
        build_judge(spec)


def test_url_and_reply_parsing():
    assert chat_url("http://h:8000/v1/") == "http://h:8000/v1/chat/completions"
    assert chat_url("http://h/v1/chat/completions") == "http://h/v1/chat/completions"
    reply = {"choices": [{"message": {"content": "**Yes**, correct"}}]}
    assert parse_verdict(reply) is True


@pytest.mark.parametrize(
    "name", ["AWS_SECRET_ACCESS_KEY", "HOME", "CARINA_TOKEN", "carina_judge_x"]
)
def test_a_job_may_not_send_other_environment_variables_to_its_judge(name: str) -> None:
    with pytest.raises(ValueError, match="CARINA_JUDGE_"):
        JudgeSpec(kind=JudgeKind.HTTP, url="http://x/v1", api_key_env=name)
