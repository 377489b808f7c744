"""Progress: the operator scrapes each running job's rank-0 /metrics endpoint.

Why this path (docs/architecture.md, "Operator"): workers need no API credentials at all
(automountServiceAccountToken is off), the operator needs no permission beyond reading pods,
and the numbers are the ones the worker already exports for Prometheus: step, loss, the step
of the newest complete checkpoint (every save reaches status.lastCheckpoint, not only the one
a preempted worker acknowledges), the damaged checkpoints a resume passed over, rank 0's
median step time (the stall rule's yardstick) and every rank's compute time per step (from
which the engine names stragglers). A step that stops advancing enqueues nothing here: the
engine's Wait until the moment the job would be stalled brings its reconcile. The
embedded substrate reads the same endpoint with the same parser (`planning.progress`). One
small GET per running job per interval, from one place, bounded in concurrency.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from carina.operators.runtime.cache import Key
from carina.operators.trainingjob.reconcile import Reconciler, Scraped
from carina.platform.api.types import Phase
from carina.platform.planning.progress import read_scrape

log = logging.getLogger(__name__)


def targets(reconciler: Reconciler) -> list[tuple[Key, int, str]]:
    """(job, generation, URL of its rank-0 metrics) for every Running job whose rank 0 has
    an IP."""
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
                out.append((key, restarts, url))
    return out


def take(reconciler: Reconciler, key: Key, restart: int, text: str) -> bool:
    """Keep what rank 0 of generation `restart` said (its /metrics text); whether it moved.

    What a generation's rank 0 said is kept with the generation, so a restarted gang's status
    keeps the last known progress until its own rank 0 reports.
    """
    now = reconciler.clock()
    scrape = read_scrape(text, now)
    old = reconciler.scraped.get(key)
    if old is None or old.restart != restart:
        old = Scraped(restart, None)  # nothing yet from this generation's rank 0
    progress, saved = scrape.progress, scrape.checkpoint_step
    stepped = progress is not None and (
        old.progress is None
        or old.progress.step != progress.step
        or old.progress.loss != progress.loss
    )
    checkpointed = saved is not None and (old.checkpoint is None or saved != old.checkpoint[0])
    damaged = scrape.damaged != old.damaged
    reconciler.scraped[key] = Scraped(
        restart,
        progress if stepped else old.progress,
        (saved, now) if saved is not None and checkpointed else old.checkpoint,
        scrape.damaged,
        scrape.rank_seconds or old.rank_seconds,
    )
    return stepped or checkpointed or damaged


async def scrape_once(
    reconciler: Reconciler, session: aiohttp.ClientSession, limit: asyncio.Semaphore
) -> int:
    """Scrape every target once; enqueue the jobs whose progress, checkpoint or damaged
    checkpoints moved (`take`). Returns how many did.
    """

    async def one(key: Key, restart: int, url: str) -> None:
        async with limit:
            try:
                async with session.get(url) as resp:
                    if resp.status != 200:
                        return
                    text = await resp.text()
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.debug("progress of %s/%s: %s", *key, exc)
                return
        if take(reconciler, key, restart, text):
            reconciler.queue.add(key)
            moved.append(key)

    moved: list[Key] = []
    await asyncio.gather(*(one(k, r, u) for k, r, u in targets(reconciler)))
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
