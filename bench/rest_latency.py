"""REST latency of the control plane: p50/p99 of get and list, 50 concurrent clients.

Method: a store-only local backend (no worker processes) holding 1,000 jobs in one
namespace is served by uvicorn in its own process (one worker, as `carina up` runs it); a
client process runs 50 asyncio tasks on their own keep-alive connections, each sending its
next request as soon as the last one answered, for a fixed count per operation after a
warm-up. Latency is measured per request at the client (a minimal HTTP/1.1 client, so the
client's own CPU cost stays small); the server's histogram and the CPU time each side spent
per request are printed beside it. Operations: GET one
job (a random one of the 1,000), LIST one page (limit=100, the default) and LIST all
1,000 (limit=1000).

With `--baseline DIR` (another checkout of the repository, e.g. `git worktree add DIR REF`
or `git archive REF | tar -x -C DIR`) a second server runs that code over its own copy of
the jobs, and each operation is measured on both, one after the other, in the same run:
the two figures then share the machine's load.

    .venv/bin/python bench/rest_latency.py [--jobs 1000] [--clients 50] [--requests 2000]
        [--baseline DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from builders import make_job  # noqa: E402

from carina.testcluster.processes import cpu_seconds  # noqa: E402

TOKEN = "bench-token"
BASE = "/api/v1/namespaces/bench/trainingjobs"


def serve(state: Path, port: int, code: Path | None = None) -> subprocess.Popen[bytes]:
    """uvicorn over a store-only local backend in `state`; the code of checkout `code` if given."""
    (state / "tokens.yaml").write_text(
        yaml.safe_dump({"tokens": [{"name": "bench", "token": TOKEN, "namespaces": ["*"]}]})
    )
    env = {**os.environ, "CARINA_STATE_DIR": str(state), "CARINA_RUN_WORKERS": "false"}
    if code is not None:
        env["PYTHONPATH"] = str(package_of(code, state / "code"))
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "carina.platform.controlplane.main:create_app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
            "--timeout-keep-alive",
            "75",  # as `carina up`: polling clients keep their connections
        ],
        env=env,
    )


def package_of(checkout: Path, into: Path) -> Path:
    """A folder whose `carina` package is `checkout`'s (found before the installed one)."""
    package = into / "carina"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for root in ("platform", "operators", "workloads", "testcluster"):
        if (checkout / root).is_dir():
            (package / root).symlink_to((checkout / root).resolve())
    return into


async def wait_ready(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        for _ in range(400):
            try:
                if (await http.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    raise RuntimeError(f"no server at {url}")


async def fill(url: str, jobs: int) -> None:
    async with httpx.AsyncClient(
        base_url=url, timeout=30, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as http:
        for i in range(jobs):
            resp = await http.post(BASE, json=make_job(f"job-{i:05d}"))
            assert resp.status_code == 201, resp.text


async def measure(port: int, paths: list[str], clients: int, total: int) -> list[float]:
    """Latencies (s) of `total` requests spread over `clients` keep-alive connections.

    A minimal HTTP/1.1 client on asyncio streams: request bytes prepared once, responses
    read by Content-Length. httpx costs ~4 ms of CPU per request here, several times the
    server's own cost, and would measure itself rather than the server.
    """
    requests = [
        f"GET {p} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
        for p in paths
    ]
    latencies: list[float] = []
    remaining = total

    async def loop() -> None:
        nonlocal remaining
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while remaining > 0:
                remaining -= 1
                start = time.perf_counter()
                writer.write(random.choice(requests))
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - start)
                assert head.startswith(b"HTTP/1.1 200"), head[:100]
        finally:
            writer.close()

    await asyncio.gather(*(loop() for _ in range(clients)))
    return latencies


async def server_histogram(http: httpx.AsyncClient, route: str) -> dict[float, float]:
    """Cumulative bucket counts of the server's own request-duration histogram for a route."""
    text = (await http.get("/metrics")).text
    out: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith("carina_api_request_duration_seconds_bucket{") and (
            f'route="{route}"' in line and 'method="GET"' in line
        ):
            le = line.split('le="')[1].split('"')[0]
            out[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return out


def bucket_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """The upper bound (ms) of the bucket holding the q-quantile of the requests in between."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0
    for bound, count in zip(bounds, counts, strict=True):
        if total and count >= q * total:
            return bound * 1000
    return float("nan")


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000 if q < 100 else 0


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="carina-bench-") as tmp:
        codes = {"baseline": args.baseline, "this": None} if args.baseline else {"this": None}
        servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        try:
            for i, (label, code) in enumerate(codes.items()):
                state = Path(tmp) / label
                state.mkdir()
                port = 18000 + (os.getpid() + i) % 1000
                servers[label] = serve(state, port, code), port
            for _, port in servers.values():
                await wait_ready(f"http://127.0.0.1:{port}")
                await fill(f"http://127.0.0.1:{port}", args.jobs)
            ops = {
                "get": [f"{BASE}/job-{i:05d}" for i in range(args.jobs)],
                "list (limit=100)": [f"{BASE}?limit=100"],
                f"list (limit={args.jobs})": [f"{BASE}?limit={args.jobs}"],
            }
            print(
                f"machine: {platform.processor() or platform.machine()}, "
                f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
                f"Python {platform.python_version()}"
            )
            print(
                f"{args.jobs} jobs stored, {args.clients} concurrent clients, "
                f"{args.requests} requests per operation (after {args.clients * 4} warm-up)"
            )
            print(
                f"{'operation':<20} {'server':<9} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8}"
                f"   server-side p50/p99 (bucket bound, ms)   CPU ms/request server / client"
            )
            route = "/api/v1/namespaces/{namespace}/trainingjobs"
            for name, paths in ops.items():
                templ = route + ("/{name}" if name == "get" else "")
                for label, (server, port) in servers.items():
                    await measure(port, paths, args.clients, args.clients * 4)
                    async with httpx.AsyncClient(
                        base_url=f"http://127.0.0.1:{port}",
                        timeout=30,
                        headers={"Authorization": f"Bearer {TOKEN}"},
                    ) as http:
                        before = await server_histogram(http, templ)
                        cpu = cpu_seconds(server.pid), time.process_time()
                        start = time.perf_counter()
                        lat = await measure(port, paths, args.clients, args.requests)
                        rate = len(lat) / (time.perf_counter() - start)
                        server_ms = (cpu_seconds(server.pid) - cpu[0]) / len(lat) * 1000
                        client_ms = (time.process_time() - cpu[1]) / len(lat) * 1000
                        after = await server_histogram(http, templ)
                    print(
                        f"{name:<20} {label:<9} {pct(lat, 50):>8.1f} {pct(lat, 99):>8.1f}"
                        f" {rate:>8.0f}   <= {bucket_quantile(before, after, 0.5):g}"
                        f" / <= {bucket_quantile(before, after, 0.99):g}"
                        f"   {server_ms:.2f} / {client_ms:.2f}"
                    )
        finally:
            for server, _ in servers.values():
                server.terminate()
                server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument(
        "--baseline", type=Path, help="a checkout of the code to compare with, served beside"
    )
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
