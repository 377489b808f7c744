"""A real Prometheus server (Debian's `prometheus` package) scraping loopback targets."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from carina.testcluster.binaries import ToolsMissing
from carina.testcluster.processes import Supervisor, free_port, wait_until

START_TIMEOUT = 60.0


def prometheus_binary() -> Path:
    """$CARINA_PROMETHEUS_BIN, else `prometheus` on PATH; ToolsMissing names the package."""
    found = os.environ.get("CARINA_PROMETHEUS_BIN") or shutil.which("prometheus")
    if not found:
        raise ToolsMissing("prometheus not found: apt-get install prometheus (or `make deps`)")
    return Path(found)


class PrometheusServer:
    """Prometheus on a free loopback port with a config this object owns and reloads.

    Scrapes every second so tests wait little; `add_targets` adds a job and reloads,
    `query` runs an instant PromQL query through the HTTP API.
    """

    def __init__(self, scrape_interval: str = "1s", workdir: Path | None = None) -> None:
        self.scrape_interval = scrape_interval
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="carina-prometheus-"))
        self.config_path = self.workdir / "prometheus.yml"
        self.port = 0
        self.url = ""
        self._jobs: dict[str, dict[str, Any]] = {}
        self._rule_files: list[str] = []
        self._supervisor = Supervisor(self.workdir)

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> PrometheusServer:
        """Start the server and wait until it is ready."""
        binary = prometheus_binary()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._write_config()
        child = self._supervisor.start(
            "prometheus",
            [
                binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",  # POST /-/reload after add_targets
                "--log.level=warn",
            ],
        )
        try:
            wait_until(
                lambda: self._get("/-/ready") is not None,
                START_TIMEOUT,
                "prometheus",
                alive=child.check_alive,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server and remove its folder."""
        self._supervisor.stop_all()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- configuration ---------------------------------------------------------------------

    def _write_config(self) -> None:
        config = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "rule_files": self._rule_files,
            "scrape_configs": list(self._jobs.values()),
        }
        # JSON is YAML: no YAML library needed.
        self.config_path.write_text(json.dumps(config, indent=2))

    def _reload(self) -> None:
        self._write_config()
        request = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        # Prometheus answers 500 with the parse error when the new config is bad.
        with urllib.request.urlopen(request, timeout=30):
            pass

    def add_targets(
        self,
        job: str,
        targets: Sequence[str],
        metrics_path: str = "/metrics",
        labels: dict[str, str] | None = None,
        wait: bool = True,
        options: dict[str, Any] | None = None,
    ) -> None:
        """Scrape `targets` ("127.0.0.1:8000", ...) as `job`; wait until Prometheus lists them.

        `options` go into the job's scrape_config as they are, e.g. {"honor_labels": True}.
        """
        self._jobs[job] = {
            "job_name": job,
            "metrics_path": metrics_path,
            "static_configs": [{"targets": list(targets), "labels": labels or {}}],
            **(options or {}),
        }
        self._reload()
        if wait:
            wait_until(
                lambda: len(self.active_targets(job)) == len(targets),
                30,
                f"prometheus to pick up job {job}",
            )

    def remove_job(self, job: str) -> None:
        """Stop scraping `job`."""
        if self._jobs.pop(job, None) is not None:
            self._reload()

    def set_rule_files(self, paths: Sequence[Path]) -> None:
        """Load recording/alerting rule files (replaces the previous list) and reload."""
        self._rule_files = [str(p) for p in paths]
        self._reload()

    # -- HTTP API --------------------------------------------------------------------------

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=30) as resp:
            body = resp.read()
        return json.loads(body) if body.startswith(b"{") else body.decode()

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path> and return its `data`; raises RuntimeError on an API error."""
        reply = self._get(f"/api/v1/{path}", params)
        if reply.get("status") != "success":
            raise RuntimeError(f"prometheus {path}: {reply.get('error')}")
        return reply["data"]

    def active_targets(self, job: str | None = None) -> list[dict[str, Any]]:
        """Active scrape targets, optionally only those of `job`."""
        targets: list[dict[str, Any]] = self.api("targets", state="active")["activeTargets"]
        return [t for t in targets if job is None or t["labels"].get("job") == job]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Run an instant query; returns the result vector (list of {metric, value})."""
        data = self.api("query", query=promql)
        return list(data["result"]) if isinstance(data["result"], list) else [data["result"]]

    def wait_for_query(self, promql: str, timeout: float = 30) -> list[dict[str, Any]]:
        """Poll `promql` until it returns a non-empty result (e.g. after the first scrape)."""
        results: list[dict[str, Any]] = []

        def ready() -> bool:
            nonlocal results
            results = self.query(promql)
            return bool(results)

        wait_until(ready, timeout, f"a result for {promql!r}", interval=0.5)
        return results
