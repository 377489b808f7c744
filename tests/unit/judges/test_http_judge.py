"""The http judge's logic, in process: replies come from an httpx.MockTransport, no socket.

The same judge against a real server on loopback (timeouts, retries, refused connections, the
bearer token on the wire) is tests/integration/processes/test_http_judge_server.py.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from carina.workloads.config import JudgeKind, JudgeSpec
from carina.workloads.errors import WorkerError
from carina.workloads.judges import JudgeItem, Verdict, build_judge
from carina.workloads.judges.http import HttpJudge, chat_url, parse_verdict, render_prompt


def chat_reply(content: str, model: str = "judge") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": model,
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": content},
            }
        ],
    }


class ChatEndpoint:
    """Grades by the candidate in the user message, as the chat-completions protocol says."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path != "/v1/chat/completions":
            return httpx.Response(404, json={"error": "not found"})
        body = json.loads(request.content)
        self.requests.append(body)
        candidate = body["messages"][-1]["content"].split("Candidate answer: ")[1].split("\n")[0]
        if candidate == "GARBAGE":
            return httpx.Response(200, json=chat_reply("Well, it depends on what you mean."))
        if candidate == "NOJSON":
            return httpx.Response(200, content=b"<html>oops</html>")
        if candidate == "DOWN":
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(
            200, json=chat_reply("ACCEPT" if candidate == "Rome" else "REJECT.", body["model"])
        )


def in_process(judge: HttpJudge, endpoint: ChatEndpoint) -> HttpJudge:
    """The judge with its client's headers and timeout, its requests answered by `endpoint`."""
    old = judge.client
    judge.client = httpx.Client(
        transport=httpx.MockTransport(endpoint), headers=old.headers, timeout=old.timeout
    )
    old.close()
    return judge


def ask(judge: HttpJudge, *candidates: str) -> list[Verdict]:
    return judge.judge([JudgeItem("Where does Ada live?", ("Rome",), c) for c in candidates])


def test_verdicts_follow_the_endpoints_replies() -> None:
    endpoint = ChatEndpoint()
    judge = in_process(HttpJudge("http://judge/v1", model="grader"), endpoint)
    assert [v.accepted for v in ask(judge, "Rome", "Oslo")] == [True, False]
    request = next(r for r in endpoint.requests if "Rome" in r["messages"][-1]["content"])
    assert request["model"] == "grader"
    assert request["temperature"] == 0
    assert request["messages"][0]["role"] == "system"
    assert "Reference answer: Rome" in request["messages"][-1]["content"]


def test_prompt_template_fills_question_gold_and_candidate() -> None:
    endpoint = ChatEndpoint()
    template = 'Q={question} G={gold} {"json": "braces stay"}\nCandidate answer: {candidate}\n'
    ask(in_process(HttpJudge("http://judge/v1", template=template), endpoint), "Rome")
    sent = endpoint.requests[0]["messages"][-1]["content"]
    assert sent == (
        'Q=Where does Ada live? G=Rome {"json": "braces stay"}\nCandidate answer: Rome\n'
    )


def test_unanswerable_gold_is_spelled_out_for_the_grader():
    text = render_prompt("{gold}", JudgeItem("q", (), "x"))
    assert text.startswith("unanswerable")


def test_malformed_reply_is_rejected_and_the_batch_goes_on() -> None:
    judge = in_process(HttpJudge("http://judge/v1"), ChatEndpoint())
    verdicts = ask(judge, "GARBAGE", "Rome", "NOJSON")
    assert not verdicts[0].accepted
    assert verdicts[0].error is not None
    assert "does not start with ACCEPT or REJECT" in verdicts[0].error
    assert verdicts[1].accepted
    assert verdicts[1].error is None
    assert verdicts[2].error is not None
    assert "not JSON" in verdicts[2].error


def test_a_connection_error_is_a_rejection_not_a_crash() -> None:
    judge = in_process(HttpJudge("http://judge/v1", retries=0), ChatEndpoint())
    verdict = ask(judge, "DOWN")[0]
    assert not verdict.accepted
    assert verdict.error is not None
    assert "cannot reach" in verdict.error
    assert "1 tries" in verdict.error


def test_spec_builds_an_http_judge_with_a_bearer_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARINA_JUDGE_TOKEN", "s3cret")
    spec = JudgeSpec(kind=JudgeKind.HTTP, url="http://judge/v1", api_key_env="CARINA_JUDGE_TOKEN")
    judge = build_judge(spec)
    assert isinstance(judge, HttpJudge)
    assert judge.client.headers["Authorization"] == "Bearer s3cret"


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
