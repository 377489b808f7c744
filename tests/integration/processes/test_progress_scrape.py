"""The operator's scrape of rank 0's /metrics, against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime

import aiohttp
from aiohttp import web
from builders import make_job

from carina.operators.runtime.cache import Cache
from carina.operators.runtime.settings import Settings
from carina.operators.runtime.workqueue import WorkQueue
from carina.operators.trainingjob.reconcile import Reconciler
from carina.operators.trainingjob.scraper import scrape_once

KEY = ("ns", "llm")
NOW = datetime(2026, 1, 1, tzinfo=UTC)
LABELS = 'job="llm",namespace="ns",rank="0"'


def running_job_with_rank_zero(cache: Cache) -> None:
    body = dict(make_job("llm"))
    body["metadata"].update(namespace="ns", uid="job-uid", resourceVersion="1")
    body["status"] = {"phase": "Running", "restarts": 0}
    cache.put_job(copy.deepcopy(body))
    cache.put_pod(
        {
            "metadata": {
                "name": "llm-worker-0-r0",
                "namespace": "ns",
                "uid": "p0",
                "resourceVersion": "2",
                "labels": {
                    "carina.dev/job": "llm",
                    "carina.dev/index": "0",
                    "carina.dev/restart": "0",
                },
            },
            "status": {"phase": "Running", "podIP": "10.0.0.1"},
        }
    )


async def scrape(texts: list[str]) -> list[tuple[int, Reconciler]]:
    """Serve each text in turn and scrape it; (jobs moved, reconciler) after each."""
    served = {"text": ""}

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=served["text"])

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    settings = Settings(progress_url=f"http://127.0.0.1:{port}/metrics")
    cache = Cache()
    running_job_with_rank_zero(cache)
    rec = Reconciler(settings, None, cache, WorkQueue(), clock=lambda: NOW)  # type: ignore[arg-type]
    out = []
    try:
        async with aiohttp.ClientSession() as session:
            for text in texts:
                served["text"] = text
                out.append((await scrape_once(rec, session, asyncio.Semaphore(4)), rec))
    finally:
        await runner.cleanup()
    return out


def test_a_new_checkpoint_step_alone_wakes_the_job():
    step = f"carina_worker_step{{{LABELS}}} 120\n"
    saved = f"carina_checkpoint_last_step{{{LABELS}}} 100\n"
    results = asyncio.run(scrape([step + saved.replace("100", "0"), step, step + saved]))
    (first, rec), (second, _), (third, _) = results
    assert (first, second, third) == (1, 0, 1)
    scraped = rec.scraped[KEY]
    assert scraped.restart == 0
    assert scraped.progress is not None
    assert scraped.progress.step == 120
    assert scraped.checkpoint == (100, NOW)


def test_damaged_checkpoints_reported_by_rank_zero_wake_the_job():
    step = f"carina_worker_step{{{LABELS}}} 120\n"
    damaged = (
        f'carina_checkpoint_damaged{{{LABELS},step="100",uri="s3://b/ns/llm/step-00000100",'
        'file="manifest.json",reason="not JSON"} 1.0\n'
    )
    results = asyncio.run(scrape([step, step + damaged, step + damaged]))
    assert [moved for moved, _ in results] == [1, 1, 0]  # news once, then nothing new
    rec = results[-1][1]
    [bad] = rec.scraped[KEY].damaged
    assert (bad.step, bad.uri, bad.file, bad.reason) == (
        100,
        "s3://b/ns/llm/step-00000100",
        "manifest.json",
        "not JSON",
    )
