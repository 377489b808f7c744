"""The local backend's store feed: each watcher hears of every job change, as GET serves the
job, from one thread that reads the store only after another connection has written."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from builders import make_job

from carina.platform.controlplane.job_watch import JobWatch, StoreFeed, WatchEvent
from carina.platform.embedded.store import Store


async def next_event(watch: JobWatch) -> WatchEvent:
    return await asyncio.wait_for(watch.next(), 30)  # a guard against a hang, not a timing


def test_a_watcher_hears_added_modified_and_deleted_for_its_namespace_only(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "carina.db")
    store.create_job("ns", make_job("there"), now=1.0)

    async def scenario() -> list[tuple[str, str, str | None]]:
        feed = StoreFeed(store, interval_seconds=0.01)
        watch = JobWatch("ns")
        await asyncio.to_thread(feed.add, watch)
        try:
            seen = [await next_event(watch)]
            store.create_job("elsewhere", make_job("other"), now=2.0)
            row = store.create_job("ns", make_job("new"), now=3.0)
            seen.append(await next_event(watch))
            store.write_status(row.uid, {"phase": "Running"})
            seen.append(await next_event(watch))
            store.remove_job(row.uid)
            seen.append(await next_event(watch))
        finally:
            watch.close()
            await asyncio.to_thread(feed.stop)
        return [
            (e.type, e.name, (json.loads(e.object).get("status") or {}).get("phase")) for e in seen
        ]

    assert asyncio.run(scenario()) == [
        ("ADDED", "there", None),
        ("ADDED", "new", None),
        ("MODIFIED", "new", "Running"),
        ("DELETED", "new", "Running"),
    ]
