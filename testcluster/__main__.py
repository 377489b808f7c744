"""Run the test cluster in the foreground: `python -m carina.testcluster` (make cluster).

Starts etcd, kube-apiserver, kube-scheduler, kube-controller-manager and kwok on loopback,
installs Carina's CRDs, creates the fake GPU pools, and (when available) a Prometheus server
and a MinIO S3 store; prints the environment to use them and waits. Ctrl-C or SIGTERM stops
everything in reverse order.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import time
from types import FrameType

from carina.testcluster.binaries import ToolsMissing
from carina.testcluster.cluster import DEFAULT_CRDS_DIR, TestCluster
from carina.testcluster.pools import BLUE_VELA, CPU, VELA
from carina.testcluster.processes import ProcessDied
from carina.testcluster.prometheus import PrometheusServer
from carina.testcluster.s3 import S3Server

DEFAULT_BUCKET = "carina"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m carina.testcluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--vela", type=int, default=VELA.size, help="nodes in the vela pool (A100)")
    p.add_argument(
        "--blue-vela",
        type=int,
        default=BLUE_VELA.size,
        help="nodes in the blue-vela pool (H100 + InfiniBand)",
    )
    p.add_argument("--cpu", type=int, default=CPU.size, help="untainted CPU-only nodes")
    p.add_argument("--no-crds", action="store_true", help=f"skip {DEFAULT_CRDS_DIR}")
    p.add_argument("--no-prometheus", action="store_true", help="do not start Prometheus")
    p.add_argument("--no-s3", action="store_true", help="do not start the MinIO S3 store")
    p.add_argument("--keep", action="store_true", help="keep the folder (logs, etcd) on exit")
    return p.parse_args(argv)


def _stop_signal(_signum: int, _frame: FrameType | None) -> None:
    # Same path as Ctrl-C, so the finally blocks stop everything in reverse order.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Start everything, print how to use it, wait for Ctrl-C; returns the exit status."""
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    # A shell starts background jobs with SIGINT ignored, and Python then installs no
    # KeyboardInterrupt handler: set it explicitly so `kill -INT` works as Ctrl-C does.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _stop_signal)
    signal.signal(signal.SIGHUP, _stop_signal)  # the terminal went away
    pools = [
        CPU.with_size(args.cpu),
        VELA.with_size(args.vela),
        BLUE_VELA.with_size(args.blue_vela),
    ]
    cluster = TestCluster(
        pools=[p for p in pools if p.size > 0],
        crds_dir=None if args.no_crds else DEFAULT_CRDS_DIR,
        keep_workdir=args.keep,
    )
    with contextlib.ExitStack() as stack:
        try:
            print("starting the test cluster ...", flush=True)
            stack.enter_context(cluster)
            assert cluster.bins
            # Our kubectl matches the server's version; an older one on PATH warns about skew.
            exports = [
                f"export KUBECONFIG={cluster.kubeconfig}",
                f"export PATH={cluster.bins.kubectl.parent}:$PATH",
            ]
            notes = [f"logs: {cluster.workdir / 'logs'}"]
            if not args.no_prometheus:
                try:
                    prom = stack.enter_context(PrometheusServer(scrape_interval="5s"))
                    notes.append(f"prometheus: {prom.url} (config {prom.config_path})")
                except ToolsMissing as e:
                    notes.append(f"prometheus skipped: {e}")
            if not args.no_s3:
                try:
                    s3 = stack.enter_context(S3Server())
                    s3.create_bucket(DEFAULT_BUCKET)
                    exports += [f"export {k}={v}" for k, v in s3.env.items()]
                    notes.append(f"s3: {s3.endpoint_url}, bucket s3://{DEFAULT_BUCKET}")
                except ToolsMissing as e:
                    notes.append(f"s3 skipped: {e}")
        except ToolsMissing as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\ninterrupted; stopping ...", flush=True)
            return 130
        print(
            "\n".join(
                [
                    "",
                    "test cluster is up. In another shell:",
                    "",
                    *exports,
                    "",
                    "kubectl get nodes -L carina.dev/pool,nvidia.com/gpu.product",
                    "",
                    *notes,
                    "",
                    "Ctrl-C stops everything.",
                ]
            ),
            flush=True,
        )
        try:
            while True:
                cluster.check_alive()
                time.sleep(1)
        except KeyboardInterrupt:
            print("\nstopping ...", flush=True)
        except ProcessDied as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    print("stopped; nothing left running.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
