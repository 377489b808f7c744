"""The local backend: jobs in SQLite, run by the embedded substrate on this machine.

Tokens come from a YAML file that maps each token to the namespaces it may use:

    tokens:
      - name: alice
        token: "..."            # or sha256: "<hex digest of the token>"
        namespaces: [team-a]    # "*" for every namespace

`carina up` writes one for the local user (all namespaces) when none exists.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from carina.platform.api import TrainingJob
from carina.platform.local.capacity import Capacity, parse_quantity, visible_gpus
from carina.platform.local.launcher import Launcher, run_paths
from carina.platform.local.store import Conflict, JobRow, Store
from carina.platform.local.substrate import Substrate, SubstrateConfig
from carina.platform.server.backends.base import AlreadyExists, NotFound, Principal
from carina.platform.server.metrics_source import PrometheusSource
from carina.platform.server.schemas import EventList, EventOut, MetricSeries, Point
from carina.platform.server.settings import Settings

TOKEN_FILE_NAME = "token"  # the local user's own token, next to the tokens file


class TokenFile:
    """token -> (name, namespaces), read from YAML; reloaded when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime = -1.0
        self._by_digest: dict[str, tuple[str, frozenset[str] | None]] = {}

    def lookup(self, token: str) -> Principal | None:
        self._reload()
        digest = hashlib.sha256(token.encode()).hexdigest()
        for known, (name, namespaces) in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                return Principal(name=name, token=token, namespaces=namespaces)
        return None

    def _reload(self) -> None:
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            self._by_digest = {}
            return
        if mtime == self._mtime:
            return
        doc = yaml.safe_load(self.path.read_text()) or {}
        entries: dict[str, tuple[str, frozenset[str] | None]] = {}
        for i, entry in enumerate(doc.get("tokens") or []):
            digest = entry.get("sha256") or hashlib.sha256(str(entry["token"]).encode()).hexdigest()
            spaces = [str(n) for n in entry.get("namespaces") or []]
            entries[str(digest)] = (
                str(entry.get("name", f"token-{i}")),
                None if "*" in spaces else frozenset(spaces),
            )
        self._by_digest, self._mtime = entries, mtime


def ensure_local_token(tokens_file: Path) -> str:
    """The local user's token (all namespaces), created with the tokens file if absent."""
    own = tokens_file.parent / TOKEN_FILE_NAME
    if own.exists():
        return own.read_text().strip()
    token = secrets.token_urlsafe(32)
    tokens_file.parent.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"tokens": []}
    if tokens_file.exists():
        doc = yaml.safe_load(tokens_file.read_text()) or {"tokens": []}
    doc.setdefault("tokens", []).append(
        {
            "name": os.environ.get("USER", "local"),
            "sha256": hashlib.sha256(token.encode()).hexdigest(),
            "namespaces": ["*"],
        }
    )
    _write_private(tokens_file, yaml.safe_dump(doc))
    _write_private(own, token + "\n")
    return token


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def machine_capacity(settings: Settings) -> Capacity:
    """What the substrate may hand to workers: the settings, else this machine."""
    if settings.capacity_memory is not None:
        memory = parse_quantity(settings.capacity_memory)
    else:
        memory = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    cpus = settings.cpus() if settings.run_workers else 0.0
    gpus = settings.capacity_gpus if settings.capacity_gpus is not None else visible_gpus()
    return Capacity(cpus=cpus, memory_bytes=memory, gpus=gpus)


class LocalBackend:
    """The Backend interface over the SQLite store and the embedded substrate."""

    name = "local"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state_dir = settings.resolved_state_dir()
        self.store = Store(self.state_dir / "carina.db")
        self.tokens = TokenFile(settings.resolved_tokens_file())
        self.substrate = Substrate(
            self.store,
            Launcher(settings.worker_command),
            SubstrateConfig(
                state_dir=self.state_dir,
                capacity=machine_capacity(settings),
                stop_grace_seconds=settings.stop_grace_seconds,
                interval_seconds=settings.reconcile_seconds,
            ),
        )
        self.prometheus = (
            PrometheusSource(settings.prometheus_url) if settings.prometheus_url else None
        )
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._thread = threading.Thread(
            target=self.substrate.run_forever, name="carina-substrate", daemon=True
        )
        self._thread.start()

    async def stop(self) -> None:
        await asyncio.to_thread(self.substrate.shutdown, self.settings.run_workers)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10)

    async def ready(self) -> bool:
        """The store answers, and the substrate runs (when it is meant to)."""
        try:
            self.store.list_jobs("kube-system", limit=1)
        except Exception:
            return False
        return not self.settings.run_workers or bool(self._thread and self._thread.is_alive())

    # ------------------------------------------------------------ who is calling

    async def authenticate(self, token: str) -> Principal | None:
        return self.tokens.lookup(token)

    async def authorize(
        self, principal: Principal, namespace: str, verb: str, resource: str = "trainingjobs"
    ) -> bool:
        return principal.namespaces is None or namespace in principal.namespaces

    # ------------------------------------------------------------ jobs

    async def create(self, namespace: str, job: TrainingJob) -> str:
        manifest = job.model_dump(mode="json", by_alias=True, exclude_none=True)
        manifest.pop("status", None)  # status is the platform's to write
        try:
            row = self.store.create_job(namespace, manifest, time.time())
        except Conflict as exc:
            raise AlreadyExists(str(exc)) from None
        self.substrate.wake()
        return row.object_json()

    async def get(self, namespace: str, name: str) -> str:
        return self._row(namespace, name).object_json()

    async def list(self, namespace: str, limit: int, after: str) -> str:
        rows = self.store.list_jobs(namespace, limit + 1, after)
        more = len(rows) > limit
        rows = rows[:limit]
        cont = f'"{rows[-1].name}"' if more else "null"
        items = ",".join(r.object_json() for r in rows)
        return (
            '{"apiVersion":"carina.dev/v1alpha1","kind":"TrainingJobList",'
            f'"metadata":{{"continue":{cont}}},"items":[{items}]}}'
        )

    async def delete(self, namespace: str, name: str) -> str:
        row = self.store.mark_deleting(namespace, name, time.time())
        if row is None:
            raise NotFound(f"trainingjob {namespace}/{name} not found")
        if not self.settings.run_workers:
            self.store.remove_job(row.uid)  # no substrate to stop workers: nothing runs
        self.substrate.wake()
        return row.object_json()

    async def set_suspend(self, namespace: str, name: str, suspend: bool) -> str:
        row = self.store.update_spec(namespace, name, {"suspend": suspend})
        if row is None:
            raise NotFound(f"trainingjob {namespace}/{name} not found")
        self.substrate.wake()
        return row.object_json()

    # ------------------------------------------------------------ what happened

    async def series(
        self, namespace: str, name: str, start: float | None, end: float | None
    ) -> MetricSeries:
        row = self._row(namespace, name)
        if self.prometheus is not None:
            return await self.prometheus.series(namespace, name, start or row.created, end)
        samples = self.store.samples(row.uid, start or 0.0, end or float("inf"))
        return MetricSeries(
            source="local",
            step=[Point(time=s.time, value=s.step) for s in samples],
            loss=[Point(time=s.time, value=s.loss) for s in samples if s.loss is not None],
            tokens_per_second=[
                Point(time=s.time, value=s.tokens_per_second)
                for s in samples
                if s.tokens_per_second is not None
            ],
        )

    async def events(self, namespace: str, name: str) -> EventList:
        row = self._row(namespace, name)
        return EventList(
            items=[
                EventOut(
                    time=datetime.fromtimestamp(e.time, UTC),
                    type=e.type,
                    reason=e.reason,
                    message=e.message,
                )
                for e in self.store.events(row.uid)
            ]
        )

    async def log_tail(
        self, namespace: str, name: str, index: int, lines: int, restart: int | None = None
    ) -> str:
        """The whole log's tail (every generation, each after its marker line), or one's."""
        row = self._row(namespace, name)
        path = run_paths(self.state_dir, namespace, name, row.uid).log(index)
        if not path.exists():
            raise NotFound(f"worker {index} of {namespace}/{name} has no log (yet)")
        if restart is None:
            return await asyncio.to_thread(tail, path, lines)
        text = await asyncio.to_thread(generation_tail, path, restart, lines)
        if text is None:
            restarts = json.loads(row.status or "{}").get("restarts", 0)
            raise NotFound(
                f"worker {index} of {namespace}/{name} has no log of restart {restart} "
                f"(the job has restarted {restarts} times)"
            )
        return text

    def _row(self, namespace: str, name: str) -> JobRow:
        row = self.store.get_job(namespace, name)
        if row is None:
            raise NotFound(f"trainingjob {namespace}/{name} not found")
        return row


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


# The line the launcher writes into a worker's log before each start (launcher.Launcher.start).
_GENERATION_MARKER = re.compile(rb"^--- carina: worker \d+, restart (\d+)$")


def generation_tail(path: Path, restart: int, lines: int) -> str | None:
    """The last `lines` lines that generation `restart` wrote to a worker's log, or None.

    A generation can have several parts (a suspension and resumption, or a restarted
    `carina up`, starts the same generation again); they are read as one, markers included.
    """
    kept: deque[bytes] = deque(maxlen=lines)
    found = inside = False
    with path.open("rb") as f:
        for line in f:
            marker = _GENERATION_MARKER.match(line.rstrip(b"\r\n"))
            if marker is not None:
                inside = int(marker.group(1)) == restart
                found = found or inside
            if inside:
                kept.append(line)
    return b"".join(kept).decode(errors="replace") if found else None
