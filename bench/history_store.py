"""The job history store: writes and listings with many records, SQLite against PostgreSQL.

Method: N records (default 10,000) spread over 10 namespaces, each with two labels (one of 4
teams, one of 3 sizes), a 200-point loss curve and two 200-line log tails (about 40 KB of
JSON each, as a real record of a two-worker job), written one `put` each (a transaction
each, as the recorders write them). Then, in one namespace (about N/10 records), each
listing is timed `--repeats` times: the first page of 50, a page of 50 filtered by a label,
by phase and time, and the 20th page reached through `continue` tokens; and one `get` of a
whole record. The best time is the figure (other load only ever adds to it), the median is
printed beside it. Last, a prune by count that drops half of every namespace.

PostgreSQL is the server `tests/postgres_server.py` starts (Debian's binaries, fsync off, as
the tests run it), or `--postgres URL`.

    .venv/bin/python bench/history_store.py [--records 10000] [--repeats 20]
        [--postgres postgresql://...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from carina.platform.history.query import history_query
from carina.platform.history.record import HistoryRecord, record_of
from carina.platform.history.store import HistoryStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
T0 = datetime(2026, 11, 1, tzinfo=UTC)
TEAMS = ("nlp", "vision", "speech", "infra")
SIZES = ("small", "medium", "large")


def record(i: int) -> HistoryRecord:
    end = T0 + timedelta(minutes=i)
    return record_of(
        {
            "metadata": {
                "uid": f"uid-{i:08d}",
                "namespace": f"team-{i % 10}",
                "name": f"job-{i}",
                "labels": {"team": TEAMS[i % 4], "size": SIZES[i % 3]},
                "creationTimestamp": T0.isoformat(),
            },
            "spec": {"replicas": 2, "workload": {"pretrain": {"steps": 2000}}},
            "status": {
                "phase": "Failed" if i % 7 == 0 else "Succeeded",
                "completionTime": end.isoformat(),
                "progress": {"step": 2000, "loss": 1.5},
            },
        },
        loss=[(s * 10, 5.0 / (1 + s)) for s in range(200)],
        logs={
            str(w): "".join(f"step {s} loss 1.234 tokens/s 5678\n" for s in range(200))
            for w in range(2)
        },
    )


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3, statistics.median(times) * 1e3


def run(name: str, store: HistoryStore, records: int, repeats: int) -> None:
    start = time.perf_counter()
    for i in range(records):
        store.put(record(i))
    put_seconds = time.perf_counter() - start
    print(f"\n{name}: {records} puts in {put_seconds:.1f} s ({records / put_seconds:.0f}/s)")
    ns = "team-3"

    def page_20() -> None:
        token = None
        for _ in range(20):
            token = store.list(ns, history_query(limit=50, continue_=token)).continue_

    cases: list[tuple[str, Callable[[], object]]] = [
        ("first page of 50", lambda: store.list(ns, history_query())),
        (
            "label team=vision,size=large",
            lambda: store.list(ns, history_query(label_selector="team=vision,size=large")),
        ),
        (
            "phase=Failed since a week",
            lambda: store.list(ns, history_query(phase="Failed", since="2026-11-03T00:00:00Z")),
        ),
        ("20 pages by continue (total)", page_20),
        ("get one record", lambda: store.get(ns, "uid-00000013")),
    ]
    for label, fn in cases:
        fn()  # warm-up
        best, median = timed(fn, repeats)
        print(f"  {label:<32} best {best:7.2f} ms   median {median:7.2f} ms")
    start = time.perf_counter()
    gone = store.prune(time.time(), None, records // 20)
    print(
        f"  prune to {records // 20} per namespace: {gone} records in "
        f"{(time.perf_counter() - start) * 1e3:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--postgres", default=None)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        run("SQLite", HistoryStore(f"sqlite:///{tmp}/history.db"), args.records, args.repeats)
    if args.postgres:
        run("PostgreSQL", HistoryStore(args.postgres), args.records, args.repeats)
        return
    from postgres_server import PostgresServer

    server = PostgresServer().start()
    try:
        run("PostgreSQL", HistoryStore(server.database()), args.records, args.repeats)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
