"""The control plane's settings: one object, from CARINA_* environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from carina.platform.embedded.paths import DEFAULT_LOCAL_ROOTS, LocalRoot

DEFAULT_STATE_DIR = Path("~/.carina")


class Settings(BaseSettings):
    """Everything the server and the embedded substrate can be told (env prefix CARINA_)."""

    model_config = SettingsConfigDict(env_prefix="CARINA_", extra="ignore")

    backend: Literal["local", "kubernetes"] = "local"
    # -- local backend
    state_dir: Path = Field(DEFAULT_STATE_DIR, description="SQLite file, run folders, tokens")
    tokens_file: Path | None = Field(None, description="token -> namespaces; default state_dir")
    run_workers: bool = Field(True, description="false: store only, no worker processes")
    worker_command: list[str] | None = Field(
        None,
        description="JSON list: what each rank of a worker runs; default: this Python with"
        " -m carina.workloads",
    )
    capacity_cpus: float | None = Field(None, ge=0, description="default: this machine's CPUs")
    capacity_memory: str | None = Field(None, description="a quantity; default: physical memory")
    capacity_gpus: int | None = Field(
        None, ge=0, description="default: the GPUs nvidia-smi lists (CUDA_VISIBLE_DEVICES applies)"
    )
    reconcile_seconds: float = Field(0.5, gt=0, description="how often the substrate looks")
    stop_grace_seconds: float = Field(
        60.0, gt=0, description="SIGTERM to SIGKILL; a worker saves its checkpoint meanwhile"
    )
    local_roots: list[LocalRoot] = Field(
        default_factory=lambda: list(DEFAULT_LOCAL_ROOTS),
        description="JSON list of the folders jobs may name besides their namespace's run"
        ' folders: each "PATH" (every namespace) or {"path": PATH, "namespaces": [...]};'
        " {namespace} in a PATH stands for the job's namespace. Default:"
        ' ["/tmp/carina/{namespace}"]; [] leaves each namespace its run folders alone',
    )
    # -- kubernetes backend
    kubeconfig: Path | None = Field(
        None, description="default: KUBECONFIG or ~/.kube/config, then in-cluster (kubectl's order)"
    )
    # -- both
    prometheus_url: str | None = Field(None, description="series from PromQL when set")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="request bodies above: 413")
    max_log_lines: int = Field(5000, ge=1)
    watch_heartbeat_seconds: float = Field(
        15.0, gt=0, description="a watch stream's comment line when nothing changed for this long"
    )
    # -- job history (docs/architecture.md, "Job history")
    history_enabled: bool = Field(
        True, description="record finished and deleted jobs; false: no records, no finalizer"
    )
    history_url: str | None = Field(
        None,
        description="sqlite:///PATH or postgresql://USER:PASSWORD@HOST/DB; default: SQLite in"
        " the state folder on the local backend, none (history off) on the kubernetes backend",
    )
    history_retention_days: float | None = Field(
        30.0, gt=0, description="records that ended longer ago are pruned; null: kept"
    )
    history_retention_count: int | None = Field(
        1000, ge=1, description="records kept per namespace, the newest; null: no limit"
    )
    history_prune_seconds: float = Field(300.0, gt=0, description="how often pruning runs")
    history_log_lines: int = Field(
        200, ge=1, le=10_000, description="lines of each worker's log kept in a record"
    )

    @field_validator("local_roots", mode="before")
    @classmethod
    def _root_paths(cls, value: Any) -> Any:
        """A bare path is a root for every namespace."""
        if isinstance(value, list):
            return [{"path": v} if isinstance(v, str) else v for v in value]
        return value

    def resolved_state_dir(self) -> Path:
        return self.state_dir.expanduser().resolve()

    @field_validator("history_retention_days", "history_retention_count", mode="before")
    @classmethod
    def _no_limit(cls, value: Any) -> Any:
        """`null` (or empty) in the environment: no limit, as in a JSON document."""
        if isinstance(value, str) and value.strip().lower() in ("", "null", "none"):
            return None
        return value

    def resolved_history_url(self) -> str | None:
        """Where job history goes, or None when it is off."""
        if not self.history_enabled:
            return None
        if self.history_url:
            return self.history_url
        if self.backend == "local":
            return f"sqlite:///{self.resolved_state_dir() / 'history.db'}"
        return None

    def resolved_tokens_file(self) -> Path:
        return (self.tokens_file or self.resolved_state_dir() / "tokens.yaml").expanduser()

    def cpus(self) -> float:
        return self.capacity_cpus if self.capacity_cpus is not None else float(os.cpu_count() or 1)
