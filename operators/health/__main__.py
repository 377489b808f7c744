"""Run the node health agent: `python -m carina.operators.health` (or `carina health-agent`).

    python -m carina.operators.health --node vela-0 --once --fault-file /tmp/faults.json

The node defaults to $NODE_NAME (the chart sets it from the downward API); the cluster comes
from $KUBECONFIG (or ~/.kube/config), else the pod's service account. Without --once it runs a
round every --interval seconds until SIGTERM, with the invasive checks at most every
--full-interval seconds on an idle node (0: only when the node's
carina.dev/health-check-requested annotation asks), and serves /metrics on --port (0: off).
With --once it runs one round, prints the verdict and each check's result, and exits 0 when
the Node carries the verdict, 1 when it could not be written.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from kubernetes import config
from prometheus_client import start_http_server

from carina.operators.health.agent import Agent, AgentConfig, RoundReport
from carina.operators.health.metrics import REGISTRY
from carina.operators.health.node import NodeApi
from carina.operators.runtime.kube import load_api_client


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="carina health-agent",
        description="Check this node's health and write the verdict onto its Node.",
    )
    p.add_argument("--node", default=os.environ.get("NODE_NAME"), help="default: $NODE_NAME")
    p.add_argument("--once", action="store_true", help="run one round, print it, exit")
    p.add_argument("--fault-file", type=Path, help="JSON of check -> forced result (drills)")
    p.add_argument("--interval", type=float, default=60.0, help="seconds between rounds")
    p.add_argument(
        "--full-interval",
        type=float,
        default=6 * 3600.0,
        help="seconds between invasive runs on an idle node; 0: only on request",
    )
    p.add_argument("--port", type=int, default=0, help="serve /metrics here; 0: off")
    p.add_argument(
        "--disk-path",
        action="append",
        default=[],
        help="another filesystem to check for free space (repeatable; / always)",
    )
    p.add_argument("--log-level", default=os.environ.get("CARINA_HEALTH_LOG_LEVEL", "INFO"))
    return p


def parse_args(argv: list[str] | None = None) -> tuple[AgentConfig, argparse.Namespace]:
    """The agent's config from the command line (exits 2 with usage on a bad one)."""
    p = parser()
    args = p.parse_args(argv)
    if not args.node:
        p.error("no node: pass --node or set NODE_NAME")
    if args.interval <= 0 or args.full_interval < 0 or not 0 <= args.port <= 65535:
        p.error("--interval must be > 0, --full-interval >= 0, --port in 0-65535")
    cfg = AgentConfig(
        node=args.node,
        interval=args.interval,
        full_interval=args.full_interval,
        fault_file=args.fault_file,
        disk_paths=("/", *args.disk_path),
    )
    return cfg, args


def summary(node: str, report: RoundReport) -> str:
    """What --once prints: the verdict, then one line per check."""
    v = report.verdict
    blamed = f" ({v.check})" if v.check else ""
    lines = [f"{node}: {v.health.value}{blamed}"]
    if report.full_run:
        lines.append(f"  invasive checks ran ({report.full_run})")
    elif report.gpu_pods:
        lines.append(f"  invasive checks skipped: GPUs in use by {', '.join(report.gpu_pods)}")
    for r in v.results:
        lines.append(f"  {r.check:<14} {r.outcome.value:<11} {r.message}")
    if report.write_error:
        lines.append(f"  not written: {report.write_error}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    cfg, args = parse_args(argv)
    logging.basicConfig(
        level=str(args.log_level).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        api_client = load_api_client(2)
    except config.ConfigException as exc:
        sys.exit(
            f"carina health-agent: no cluster to talk to ({exc}); set KUBECONFIG or run in a pod"
        )
    agent = Agent(cfg, NodeApi(api_client))
    if args.once:
        report = agent.round()
        print(summary(cfg.node, report), flush=True)
        sys.exit(0 if report.node_read and report.write_error is None else 1)
    if args.port:
        start_http_server(args.port, registry=REGISTRY)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent.run_forever(stop)


if __name__ == "__main__":
    main()
