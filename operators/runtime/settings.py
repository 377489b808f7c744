"""The operator's settings, from CARINA_OPERATOR_* environment variables (the chart sets them).

pydantic-settings, as the control plane's (`carina.platform.controlplane.settings`): an empty
variable keeps the default, a bad value is refused with the variable's name and the rule
(`SettingsError`), never a traceback from deep inside the operator.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from functools import cached_property
from typing import Annotated, Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from carina.platform.api.labels import qualified_name_problem
from carina.platform.planning.placement import DEFAULT_LEVELS
from carina.platform.planning.render import RenderSettings

PREFIX = "CARINA_OPERATOR_"
_RENDER = RenderSettings()

# A comma-separated list in one variable ("team-a, team-b").
Csv = Annotated[tuple[str, ...], NoDecode]


class SettingsError(ValueError):
    """A CARINA_OPERATOR_* variable the operator cannot use; the message names each."""


def _default_priority() -> int:
    # The highest live peering priority is active: "earlier start wins", so a rolling update's
    # new replica waits on standby until the old one stops.
    return 2_000_000_000 - int(time.time()) % 1_000_000_000


class Settings(BaseSettings):
    """Everything the operator can be told; defaults suit a small cluster."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX, env_ignore_empty=True, extra="ignore", frozen=True
    )

    namespaces: Csv = ()  # empty: all namespaces
    peering: str = ""  # kopf peering object; empty runs standalone (one replica)
    # Seconds a replica's peering record counts as live without a renewal: how long a
    # standby waits before it takes over from a replica that died without saying so.
    peering_lifetime: int = Field(60, ge=5)
    priority: int = Field(default_factory=_default_priority)
    log_level: str = "INFO"
    port: int = Field(8080, ge=1, le=65535, description="/metrics and /healthz")
    # Reconciles in flight at once (different jobs; one job is never reconciled twice at once).
    workers: int = Field(16, ge=1)
    # Threads for blocking API calls (creating a gang's pods happens in parallel).
    api_threads: int = Field(32, ge=1)
    # Seconds a pod event waits before its job's reconcile, so a gang's events coalesce.
    pod_event_delay: float = Field(0.1, ge=0)
    # Least seconds between two status writes that only update worker counts or progress
    # (0: every write at once, the first included).
    status_min_interval: float = Field(5.0, ge=0)
    # ... while a gang starts (phase Starting); also how long a new gang's first status
    # write (Starting) waits for its Running one, so a gang that runs in time costs one write.
    starting_status_interval: float = Field(30.0, ge=0)
    # Informational (Normal) events are not posted while this many jobs wait for a
    # reconcile (0: never for that reason), nor beyond normal_event_rate per second (with
    # bursts of normal_event_burst; 0: no limit), so a burst of jobs costs few event writes.
    # Warnings always go.
    event_shed_depth: int = Field(64, ge=0)
    normal_event_rate: float = Field(2.0, ge=0)
    normal_event_burst: int = Field(20, ge=1)
    # Seconds between scrapes of each running job's rank-0 /metrics; 0 turns progress off.
    progress_interval: float = Field(15.0, ge=0)
    progress_timeout: float = Field(2.0, gt=0)
    progress_url: str = "http://{ip}:{port}/metrics"
    # Seconds between two rounds of the admission writer (queues, quotas, preemption).
    admission_interval: float = Field(2.0, gt=0)
    # The admission writer's Lease: one replica writes admissions; another takes over
    # this many seconds after the holder stops renewing.
    admission_lease_seconds: int = Field(15, ge=1)
    lease_namespace: str = Field(
        default_factory=lambda: os.environ.get("POD_NAMESPACE") or "default"
    )
    # What every worker pod gets (RenderSettings).
    worker_image: str = _RENDER.image
    worker_image_pull_policy: str = _RENDER.image_pull_policy
    worker_master_port: int = Field(_RENDER.master_port, ge=1, le=65535)
    worker_metrics_port: int = Field(_RENDER.metrics_port, ge=1, le=65535)
    checkpoint_root: str = _RENDER.checkpoint_root
    worker_shutdown_timeout: int = Field(_RENDER.shutdown_timeout_seconds, ge=0)
    worker_grace_margin: int = Field(_RENDER.grace_margin_seconds, ge=0)
    node_failure_seconds: int = Field(_RENDER.node_failure_seconds, ge=0)
    worker_service_account: str | None = _RENDER.service_account
    image_pull_secrets: Csv = _RENDER.image_pull_secrets
    # Node label keys of the cluster's topology levels, outermost first; spec.topology.level
    # must name one of them (Kubernetes has no standard labels for these).
    topology_levels: Csv = DEFAULT_LEVELS
    # Seconds between two looks at the nodes for a gang waiting for room in one domain.
    topology_retry_seconds: float = Field(5.0, gt=0)

    # Jobs of at least this many GPUs (all workers) start only on nodes that recently passed
    # the health agent's full checks, unless spec.preflight.required says otherwise; 0: only
    # jobs that ask.
    preflight_min_gpus: int = Field(0, ge=0)
    # Seconds between two looks at the nodes for a gang waiting on its preflight.
    preflight_retry_seconds: float = Field(10.0, gt=0)
    # Annotate a straggler's node (carina.dev/health-check-requested) so the node health
    # agent runs its full checks there.
    straggler_health_check: bool = True

    @field_validator("namespaces", "image_pull_secrets", "topology_levels", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @field_validator("topology_levels")
    @classmethod
    def _label_keys(cls, levels: tuple[str, ...]) -> tuple[str, ...]:
        for level in levels:
            problem = qualified_name_problem(level)
            if problem:
                raise ValueError(f"{level!r} is not a node label key: {problem}")
        return levels

    @field_validator("log_level")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @cached_property
    def render(self) -> RenderSettings:
        """What the renderer needs of these settings."""
        return RenderSettings(
            image=self.worker_image,
            image_pull_policy=self.worker_image_pull_policy,
            master_port=self.worker_master_port,
            metrics_port=self.worker_metrics_port,
            checkpoint_root=self.checkpoint_root,
            shutdown_timeout_seconds=self.worker_shutdown_timeout,
            grace_margin_seconds=self.worker_grace_margin,
            node_failure_seconds=self.node_failure_seconds,
            service_account=self.worker_service_account,
            image_pull_secrets=self.image_pull_secrets,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from CARINA_OPERATOR_* variables (the process's, or `env`)."""
        try:
            if env is None:
                return cls()
            values = {
                k.removeprefix(PREFIX).lower(): v
                for k, v in env.items()
                if k.startswith(PREFIX) and v != ""
            }
            return cls.model_validate(values)
        except ValidationError as exc:
            raise SettingsError(
                "; ".join(
                    f"{PREFIX}{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
                    for e in exc.errors()
                )
            ) from None
