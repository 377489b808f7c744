"""A judge behind an OpenAI-compatible chat-completions endpoint (vLLM, TGI, a hosted API).

One request per item, a few in flight at once. The reply must start with ACCEPT or REJECT
(YES/NO and CORRECT/INCORRECT are read the same way). Timeouts, connection errors, 429 and
5xx are retried `retries` times with exponential backoff; a malformed reply or an exhausted
retry budget gives a rejection carrying the error, so SSR falls back to the gold for that
example and the run goes on.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from carina.workloads.config import ExitCode, JudgeSpec
from carina.workloads.errors import WorkerError
from carina.workloads.judges.base import JudgeItem, Verdict

DEFAULT_TEMPLATE = (
    "Question: {question}\n"
    "Reference answer: {gold}\n"
    "Candidate answer: {candidate}\n\n"
    "Is the candidate answer correct given the reference? Answers may be worded differently. "
    "If the reference says the question is unanswerable, the candidate is correct only if it "
    "declines to answer. Reply with one word: ACCEPT or REJECT."
)
SYSTEM_PROMPT = "You grade answers strictly and reply with a single word."
PLACEHOLDERS = ("{question}", "{gold}", "{candidate}")
UNANSWERABLE_GOLD = "unanswerable (the document does not contain the answer)"
ACCEPT_WORDS = {"accept", "accepted", "yes", "correct"}
REJECT_WORDS = {"reject", "rejected", "no", "incorrect"}
MAX_IN_FLIGHT = 8
BACKOFF_SECONDS = 0.25


class MalformedReply(Exception):
    """The endpoint answered, but not in a form a verdict can be read from."""


def chat_url(url: str) -> str:
    """The chat-completions URL of an endpoint given as its base (…/v1) or in full."""
    url = url.rstrip("/")
    return url if url.endswith("/chat/completions") else url + "/chat/completions"


def render_prompt(template: str, item: JudgeItem) -> str:
    """The user message: placeholders replaced literally (other braces are left alone)."""
    gold = " | ".join(item.golds) if item.golds else UNANSWERABLE_GOLD
    values = {"{question}": item.question, "{gold}": gold, "{candidate}": item.candidate.strip()}
    for key, value in values.items():
        template = template.replace(key, value)
    return template


def parse_verdict(body: Any) -> bool:
    """Accepted or not from a chat-completions response body; MalformedReply otherwise."""
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as e:
        raise MalformedReply(f"no choices[0].message.content in the reply: {body!r:.200}") from e
    if not isinstance(content, str):
        raise MalformedReply(f"message content is not text: {content!r:.200}")
    words = content.strip().split()
    first = words[0].strip(".,:;!*\"'").lower() if words else ""
    if first in ACCEPT_WORDS:
        return True
    if first in REJECT_WORDS:
        return False
    raise MalformedReply(f"reply does not start with ACCEPT or REJECT: {content!r:.200}")


class HttpJudge:
    """Asks an OpenAI-compatible endpoint for each verdict."""

    name = "http"

    def __init__(
        self,
        url: str,
        model: str | None = None,
        template: str | None = None,
        timeout: float = 30.0,
        retries: int = 2,
        api_key: str | None = None,
    ) -> None:
        self.url = chat_url(url)
        self.model = model or "judge"
        self.template = template or DEFAULT_TEMPLATE
        if not any(p in self.template for p in PLACEHOLDERS):
            raise WorkerError(
                ExitCode.BAD_CONFIG,
                "judge.promptTemplate must use {question}, {gold} or {candidate}",
            )
        self.retries = retries
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(timeout=timeout, headers=headers)

    @classmethod
    def from_spec(cls, spec: JudgeSpec) -> HttpJudge:
        """An http judge configured by `spec` (the bearer token read from its env variable)."""
        api_key = None
        if spec.api_key_env:
            api_key = os.environ.get(spec.api_key_env)
            if not api_key:
                raise WorkerError(
                    ExitCode.BAD_CONFIG, f"judge.apiKeyEnv: {spec.api_key_env} is not set"
                )
        assert spec.url is not None  # the config's validator requires it for http
        return cls(
            spec.url,
            spec.model,
            spec.prompt_template,
            spec.timeout_seconds,
            spec.retries,
            api_key,
        )

    def request_body(self, item: JudgeItem) -> dict[str, Any]:
        """The chat-completions request for one item (greedy, a few tokens)."""
        return {
            "model": self.model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": render_prompt(self.template, item)},
            ],
            "temperature": 0,
            "max_tokens": 8,
        }

    def _ask(self, item: JudgeItem) -> Verdict:
        body = self.request_body(item)
        last_error = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(BACKOFF_SECONDS * 2 ** (attempt - 1))
            try:
                resp = self.client.post(self.url, json=body)
            except httpx.TimeoutException as e:
                last_error = f"timed out after {self.client.timeout.read}s ({type(e).__name__})"
                continue
            except httpx.TransportError as e:
                last_error = f"cannot reach {self.url}: {e}"
                continue
            if resp.status_code == 429 or resp.status_code >= 500:
                last_error = f"HTTP {resp.status_code} from {self.url}"
                continue
            if resp.status_code >= 400:
                return Verdict(False, "judge error", f"HTTP {resp.status_code}: {resp.text:.200}")
            try:
                accepted = parse_verdict(resp.json())
            except ValueError as e:  # not JSON at all
                return Verdict(False, "judge error", f"malformed reply: not JSON ({e})")
            except MalformedReply as e:
                return Verdict(False, "judge error", f"malformed reply: {e}")
            return Verdict(accepted, "judge accepted" if accepted else "judge rejected")
        return Verdict(False, "judge error", f"{last_error} (after {self.retries + 1} tries)")

    def judge(self, items: list[JudgeItem]) -> list[Verdict]:
        with ThreadPoolExecutor(max_workers=MAX_IN_FLIGHT) as pool:
            return list(pool.map(self._ask, items))

    def close(self) -> None:
        self.client.close()
