"""Progress: the operator scrapes each running job's rank-0 /metrics endpoint.

Why this path (docs/architecture.md, "Operator"): workers need no API credentials at all
(automountServiceAccountToken is off), the operator needs no permission beyond reading pods,
and the numbers are the ones the worker already exports for Prometheus: step, loss and the
step of the newest complete checkpoint (every save reaches status.lastCheckpoint, not only
the one a preempted worker acknowledges). One small GET per running job per interval, from
one place, bounded in concurrency.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from carina.operators.runtime.cache import Key
from carina.operators.trainingjob.reconcile import Reconciler
from carina.platform.api.types import Phase
from carina.platform.planning.progress import parse_checkpoint_step, parse_progress

log = logging.getLogger(__name__)


def targets(reconciler: Reconciler) -> list[tuple[Key, str]]:
    """(job, URL of its rank-0 metrics) for every Running job whose rank 0 has an IP."""
    settings = reconciler.settings
    out = []
    for key, body in reconciler.cache.jobs.items():
        status = body.get("status") or {}
        if status.get("phase") != Phase.RUNNING:
            continue
        restarts = status.get("restarts", 0)
        for rec in reconciler.cache.records(key):
            if rec.worker.index == 0 and rec.worker.restart == restarts and rec.ip:
                url = settings.progress_url.format(
                    ip=rec.ip, port=settings.render.metrics_port, namespace=key[0], job=key[1]
                )
                out.append((key, url))
    return out


async def scrape_once(
    reconciler: Reconciler, session: aiohttp.ClientSession, limit: asyncio.Semaphore
) -> int:
    """Scrape every target once; enqueue the jobs whose progress or checkpoint moved.

    Returns how many did.
    """

    async def one(key: Key, url: str) -> None:
        async with limit:
            try:
                async with session.get(url) as resp:
                    if resp.status != 200:
                        return
                    text = await resp.text()
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.debug("progress of %s/%s: %s", *key, exc)
                return
        now = reconciler.clock()
        progress = parse_progress(text, now)
        saved = parse_checkpoint_step(text)
        old = reconciler.progress.get(key)
        old_saved = reconciler.checkpoints.get(key)
        stepped = progress is not None and (
            old is None or old.step != progress.step or old.loss != progress.loss
        )
        checkpointed = saved is not None and (old_saved is None or saved > old_saved[0])
        if progress is not None and stepped:
            reconciler.progress[key] = progress
        if saved is not None and checkpointed:
            reconciler.checkpoints[key] = (saved, now)
        if stepped or checkpointed:
            reconciler.queue.add(key)
            moved.append(key)

    moved: list[Key] = []
    await asyncio.gather(*(one(k, u) for k, u in targets(reconciler)))
    return len(moved)


async def scrape_forever(reconciler: Reconciler) -> None:
    """Every `progress_interval` seconds, scrape all running jobs' rank 0."""
    settings = reconciler.settings
    if settings.progress_interval <= 0:
        return
    timeout = aiohttp.ClientTimeout(total=settings.progress_timeout)
    limit = asyncio.Semaphore(64)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            await asyncio.sleep(settings.progress_interval)
            await scrape_once(reconciler, session, limit)
