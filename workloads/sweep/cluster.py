"""Ray on a sweep's workers: worker 0 is the head, the others join it.

Each worker's local rank 0 runs one Ray node as a child process (`ray start --block`), so the
node goes with the worker: on the embedded platform a worker's process group is killed as a
whole, in a pod the container is. On a cluster the ports are fixed (`config.RAY_PORTS`, the
pod's named container ports) and the head is `MASTER_ADDR:6379`. On one machine (MASTER_ADDR
a loopback address) the nodes of a gang share the host: the head listens on the gang's
`MASTER_PORT`, which the platform chose free, and every other port is chosen free.

Settings that keep Ray small and predictable: token auth off (`RAY_AUTH_MODE=disabled`: the
nodes live inside one job's network, and a read-only HOME would break the token file), no
dashboard, CPUs pinned from the worker's share (Ray would otherwise count the host's), a short
temp dir (AF_UNIX socket paths are limited to 107 bytes), a capped object store.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from carina.workloads import contract
from carina.workloads.config import RAY_PORTS, RAY_WORKER_PORTS, ExitCode, SweepConfig
from carina.workloads.contract import WorkerContext
from carina.workloads.errors import WorkerError

RAY_EXTRA_HINT = "the sweep workload needs Ray: pip install 'carina[ray]'"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
# How long an orphaned node of a killed worker keeps trying to reach a head that has gone.
GCS_RECONNECT_SECONDS = 15


def require_ray() -> None:
    """Refuse to run without the `ray` extra, naming how to install it."""
    try:
        import ray.tune  # noqa: F401
    except ImportError as exc:
        raise WorkerError(ExitCode.BAD_CONFIG, RAY_EXTRA_HINT) from exc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class NodePlan:
    """How this worker's Ray node starts."""

    head: bool
    host: str  # the head's address
    port: int  # the head's GCS port
    cpus: int
    temp_dir: str
    object_store_bytes: int
    ports: dict[str, int] = field(default_factory=dict)  # flag -> port (0: Ray picks)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        """`ray start` for this node, blocking: the process lives as long as the node."""
        cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block"]
        if self.head:
            cmd += ["--head", f"--port={self.port}", "--include-dashboard=false"]
        else:
            cmd += [f"--address={self.address}"]
        cmd += [
            f"--num-cpus={self.cpus}",
            f"--object-store-memory={self.object_store_bytes}",
            f"--temp-dir={self.temp_dir}",
            "--disable-usage-stats",
        ]
        cmd += [f"--{flag}={port}" for flag, port in self.ports.items()]
        return cmd


def worker_cpus(ctx: WorkerContext, env: Mapping[str, str]) -> int:
    """This worker's CPUs: its ranks' thread share (OMP_NUM_THREADS, set by both substrates)."""
    per_rank = env.get("OMP_NUM_THREADS", "")
    if per_rank.isdigit() and int(per_rank) > 0:
        return int(per_rank) * ctx.local_world_size
    return max(1, len(os.sched_getaffinity(0)))


def node_plan(ctx: WorkerContext, cfg: SweepConfig, env: Mapping[str, str]) -> NodePlan:
    """The Ray node of this worker (its local rank 0): head on worker 0."""
    head = ctx.group_rank == 0
    tag = hashlib.sha256(f"{ctx.namespace}/{ctx.job}/{ctx.group_rank}".encode()).hexdigest()[:8]
    temp_dir = f"/tmp/ray-{tag}-{ctx.restart}"
    local = ctx.master_addr in LOOPBACK
    if local:
        port = ctx.master_port
        # Ray picks its other ports itself; these two have fixed defaults that two nodes on
        # one host would both take. (A port picked here may still be taken by the time Ray
        # binds it: the head then starts again with fresh ones, `run.run_sweep`.)
        ports = {"node-manager-port": 0, "object-manager-port": 0}
        ports["dashboard-agent-listen-port"] = _free_port()
        if head:
            ports["dashboard-port"] = _free_port()
    else:
        port = RAY_PORTS["ray-gcs"]
        ports = {
            "node-manager-port": RAY_PORTS["ray-node-mgr"],
            "object-manager-port": RAY_PORTS["ray-obj-mgr"],
            "dashboard-agent-grpc-port": RAY_PORTS["ray-agent"],
            "metrics-export-port": RAY_PORTS["ray-metrics"],
            "runtime-env-agent-port": RAY_PORTS["ray-env-agent"],
            "min-worker-port": RAY_WORKER_PORTS[0],
            "max-worker-port": RAY_WORKER_PORTS[1],
        }
    return NodePlan(
        head=head,
        host=ctx.master_addr,
        port=port,
        cpus=worker_cpus(ctx, env),
        temp_dir=temp_dir,
        object_store_bytes=cfg.object_store_mb * 1024 * 1024,
        ports=ports,
    )


def node_env(env: Mapping[str, str]) -> dict[str, str]:
    """The node's environment: the worker's, less the worker contract, plus Ray's settings.

    Trials are not ranks of the job, so they do not carry its rank variables.
    """
    out = {k: v for k, v in env.items() if k not in contract.CONTRACT_ENV}
    out.update(
        RAY_AUTH_MODE="disabled",
        RAY_USAGE_STATS_ENABLED="0",
        RAY_gcs_rpc_server_reconnect_timeout_s=str(GCS_RECONNECT_SECONDS),
    )
    return out


def reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (read from /proc), children first."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class RayNode:
    """One `ray start --block` process and the Ray processes below it."""

    def __init__(self, plan: NodePlan, env: Mapping[str, str]) -> None:
        self.plan = plan
        self.proc = subprocess.Popen(plan.command(), env=node_env(env), stdin=subprocess.DEVNULL)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM (Ray drains and stops its processes), then SIGKILL what is left."""
        below = _descendants(self.proc.pid)
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace)
        for pid in [self.proc.pid, *below, *_descendants(self.proc.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


def wait_for(check: object, timeout: float, what: str, interval: float = 0.5) -> None:
    """Poll `check()` until true; a TRANSIENT error naming `what` after `timeout` seconds."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise WorkerError(ExitCode.TRANSIENT, f"timed out after {timeout:.0f}s waiting for {what}")
