"""The operator's settings, from CARINA_OPERATOR_* environment variables (the chart sets them)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from carina.platform.planning.render import RenderSettings


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


@dataclass(frozen=True)
class Settings:
    """Everything the operator can be told; defaults suit a small cluster."""

    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    # kopf peering object; empty runs standalone (one replica).
    peering: str = ""
    # Peering priority: the highest live one is active. Defaults to "earlier start wins", so a
    # rolling update's new replica waits on standby until the old one stops.
    priority: int = field(default_factory=lambda: 2_000_000_000 - int(time.time()) % 1_000_000_000)
    log_level: str = "INFO"
    port: int = 8080  # /metrics and /healthz
    # Reconciles in flight at once (different jobs; one job is never reconciled twice at once).
    workers: int = 16
    # Threads for blocking API calls (creating a gang's pods happens in parallel).
    api_threads: int = 32
    # Seconds a pod event waits before its job's reconcile, so a gang's events coalesce.
    pod_event_delay: float = 0.1
    # Least seconds between two status writes that only update worker counts or progress.
    status_min_interval: float = 5.0
    # Seconds between scrapes of each running job's rank-0 /metrics; 0 turns progress off.
    progress_interval: float = 15.0
    progress_timeout: float = 2.0
    progress_url: str = "http://{ip}:{port}/metrics"
    render: RenderSettings = field(default_factory=RenderSettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from CARINA_OPERATOR_* variables; unset ones keep their defaults."""
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(f"CARINA_OPERATOR_{name}")
            return value if value not in (None, "") else None

        base = cls()
        r = base.render
        render = RenderSettings(
            image=get("WORKER_IMAGE") or r.image,
            image_pull_policy=get("WORKER_IMAGE_PULL_POLICY") or r.image_pull_policy,
            master_port=int(get("WORKER_MASTER_PORT") or r.master_port),
            metrics_port=int(get("WORKER_METRICS_PORT") or r.metrics_port),
            checkpoint_root=get("CHECKPOINT_ROOT") or r.checkpoint_root,
            shutdown_timeout_seconds=int(
                get("WORKER_SHUTDOWN_TIMEOUT") or r.shutdown_timeout_seconds
            ),
            grace_margin_seconds=int(get("WORKER_GRACE_MARGIN") or r.grace_margin_seconds),
            node_failure_seconds=int(get("NODE_FAILURE_SECONDS") or r.node_failure_seconds),
            service_account=get("WORKER_SERVICE_ACCOUNT") or r.service_account,
            image_pull_secrets=_csv(get("IMAGE_PULL_SECRETS") or ""),
        )
        return cls(
            namespaces=_csv(get("NAMESPACES") or ""),
            peering=get("PEERING") or "",
            priority=int(get("PRIORITY") or base.priority),
            log_level=(get("LOG_LEVEL") or base.log_level).upper(),
            port=int(get("PORT") or base.port),
            workers=int(get("WORKERS") or base.workers),
            api_threads=int(get("API_THREADS") or base.api_threads),
            pod_event_delay=float(get("POD_EVENT_DELAY") or base.pod_event_delay),
            status_min_interval=float(get("STATUS_MIN_INTERVAL") or base.status_min_interval),
            progress_interval=float(get("PROGRESS_INTERVAL") or base.progress_interval),
            progress_timeout=float(get("PROGRESS_TIMEOUT") or base.progress_timeout),
            progress_url=get("PROGRESS_URL") or base.progress_url,
            render=render,
        )
