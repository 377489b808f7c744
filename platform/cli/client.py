"""A small HTTP client for the control plane's REST API (what the CLI uses)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    import httpx

DEFAULT_SERVER = "http://127.0.0.1:8080"
API = "/api/v1/namespaces/{namespace}/trainingjobs"
WATCH = "/api/v1/watch/namespaces/{namespace}/trainingjobs"


def jobs_path(namespace: str, name: str | None = None, *rest: str) -> str:
    """The URL path of a namespace's jobs, or of one job (and below): each segment quoted.

    A name is one path segment whatever it contains: `x/../victim` cannot reach `victim`.
    """
    segments = [namespace] + ([name] if name is not None else [])
    for segment in segments:
        if segment in ("", ".", ".."):
            raise ValueError(f"{segment!r} is not a name")
    path = API.format(namespace=quote(namespace, safe=""))
    if name is not None:
        path += "/" + quote(name, safe="")
    return "/".join([path, *rest])


def _segment(name: str) -> str:
    """One path segment, quoted: a name never reaches another path."""
    if name in ("", ".", ".."):
        raise ValueError(f"{name!r} is not a name")
    return quote(name, safe="")


class ApiError(Exception):
    """A 4xx/5xx answer, with the reason, message and field errors the server gave."""

    def __init__(self, status: int, reason: str, message: str, errors: list[dict[str, str]]):
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.errors = errors


def _raise_for_status(resp: httpx.Response) -> None:
    """ApiError for a 4xx/5xx answer, with the reason, message and errors it gives."""
    if resp.status_code < 400:
        return
    try:
        detail = resp.json().get("detail")
    except ValueError:
        detail = None
    if not isinstance(detail, dict):
        detail = {"reason": resp.reason_phrase, "message": str(detail or resp.text)}
    raise ApiError(
        resp.status_code,
        str(detail.get("reason", "")),
        str(detail.get("message", "")),
        list(detail.get("errors") or []),
    )


class ServerUnreachable(Exception):
    """No control plane answered at the address."""


def default_state_dir() -> Path:
    """Where `carina up` keeps its state (CARINA_STATE_DIR, else ~/.carina)."""
    return Path(os.environ.get("CARINA_STATE_DIR") or "~/.carina").expanduser()


def local_token(state_dir: Path | None = None) -> str | None:
    """The token `carina up` wrote for the local user, if any."""
    path = (state_dir or default_state_dir()) / "token"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


class CarinaClient:
    """Synchronous client: one method per route (needs httpx, from the server extra)."""

    def __init__(
        self, server: str = DEFAULT_SERVER, token: str | None = None, timeout: float = 30.0
    ) -> None:
        import httpx  # the server extra; `carina validate` must work without it

        self._httpx = httpx
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.server = server.rstrip("/")
        self.http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> CarinaClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            resp = self.http.request(method, path, **kwargs)
        except self._httpx.TransportError as exc:
            raise ServerUnreachable(f"no Carina control plane at {self.server}: {exc}") from None
        _raise_for_status(resp)
        return resp

    def _object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """The JSON object a route answers (every route answers an object)."""
        body: dict[str, Any] = self._call(method, path, **kwargs).json()
        return body

    def healthy(self) -> bool:
        try:
            return self.http.get("/healthz", timeout=2).status_code == 200
        except self._httpx.TransportError:
            return False

    def create(self, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
        return self._object("POST", jobs_path(namespace), json=manifest)

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        return self._object("GET", jobs_path(namespace, name))

    def sweep_report(self, namespace: str, name: str) -> dict[str, Any]:
        """A sweep job's report (404 until its driver has written one)."""
        return self._object("GET", jobs_path(namespace, name, "sweep"))

    def watch(
        self, namespace: str, name: str | None = None
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """(ADDED|MODIFIED|DELETED, job) as the server streams them: each job there first,
        then every change; until the server ends the stream or the caller stops reading."""
        path = WATCH.format(namespace=_segment(namespace))
        if name is not None:
            path += "/" + _segment(name)
        # No read timeout: the server sends a heartbeat while nothing changes.
        timeout = self._httpx.Timeout(self.http.timeout.connect, read=None)
        try:
            with self.http.stream("GET", path, timeout=timeout) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    _raise_for_status(resp)
                kind = ""
                for line in resp.iter_lines():
                    if line.startswith("event:"):
                        kind = line[len("event:") :].strip()
                    elif line.startswith("data:") and kind:
                        yield kind, json.loads(line[len("data:") :])
                    elif not line:
                        kind = ""
        except self._httpx.TransportError as exc:
            raise ServerUnreachable(f"no Carina control plane at {self.server}: {exc}") from None

    def list_jobs(self, namespace: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cont = ""
        while True:
            page = self._object(
                "GET", jobs_path(namespace), params={"limit": 500, "continue": cont}
            )
            items += page["items"]
            cont = (page.get("metadata") or {}).get("continue") or ""
            if not cont:
                return items

    def delete(self, namespace: str, name: str) -> dict[str, Any]:
        return self._object("DELETE", jobs_path(namespace, name))

    def suspend(self, namespace: str, name: str, suspend: bool = True) -> dict[str, Any]:
        verb = "suspend" if suspend else "resume"
        return self._object("POST", jobs_path(namespace, name, verb))

    def metrics(self, namespace: str, name: str) -> dict[str, Any]:
        return self._object("GET", jobs_path(namespace, name, "metrics"))

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        body = self._object("GET", jobs_path(namespace, name, "events"))
        items: list[dict[str, Any]] = body["items"]
        return items

    def cluster_queues(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self._object("GET", "/api/v1/clusterqueues")["items"]
        return items

    def cluster_queue(self, name: str) -> dict[str, Any]:
        return self._object("GET", "/api/v1/clusterqueues/" + _segment(name))

    def local_queues(self, namespace: str) -> list[dict[str, Any]]:
        path = f"/api/v1/namespaces/{_segment(namespace)}/localqueues"
        items: list[dict[str, Any]] = self._object("GET", path)["items"]
        return items

    def history(self, namespace: str, **params: str | int) -> dict[str, Any]:
        """A page of the namespace's job history: {"items": [...], "continue": token|None}."""
        path = f"/api/v1/namespaces/{_segment(namespace)}/history"
        return self._object("GET", path, params={k: v for k, v in params.items() if v})

    def history_record(self, namespace: str, uid: str) -> dict[str, Any]:
        """One job's history record, by its uid."""
        return self._object(
            "GET", f"/api/v1/namespaces/{_segment(namespace)}/history/{_segment(uid)}"
        )

    def logs(
        self,
        namespace: str,
        name: str,
        worker: int = 0,
        tail: int = 100,
        restart: int | None = None,
    ) -> str:
        path = jobs_path(namespace, name, "workers", str(int(worker)), "log")
        params = {"tail": tail} if restart is None else {"tail": tail, "restart": restart}
        return self._call("GET", path, params=params).text
