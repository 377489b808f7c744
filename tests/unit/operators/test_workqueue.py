"""The work queue: each key once while queued, never twice at once, woken later on request."""

from __future__ import annotations

import asyncio

from carina.operators.runtime.workqueue import WorkQueue


def run(coro):
    return asyncio.run(coro)


def test_a_key_added_twice_is_queued_once():
    async def main():
        q = WorkQueue()
        q.add("a")
        q.add("a")
        q.add("b")
        assert len(q) == 2
        assert [await q.get(), await q.get()] == ["a", "b"]

    run(main())


def test_a_key_added_while_processing_comes_back_after_done():
    async def main():
        q = WorkQueue()
        q.add("a")
        key = await q.get()
        q.add("a")  # an event arrives mid-reconcile
        assert q._queue.empty()  # not handed to a second worker meanwhile
        q.done(key)
        assert await asyncio.wait_for(q.get(), 1) == "a"

    run(main())


def test_add_after_wakes_the_key_later_and_earliest_wins():
    async def main():
        q = WorkQueue()
        q.add_after("a", 5)
        q.add_after("a", 0.05)
        q.add_after("a", 3)  # later than the pending one: ignored
        assert await asyncio.wait_for(q.get(), 1) == "a"

    run(main())


def test_retry_backs_off_exponentially_until_success():
    async def main():
        q = WorkQueue(base_delay=0.01, max_delay=1)
        q.retry("a")
        q.retry("a")
        assert q._failures["a"] == 2
        q.succeeded("a")
        assert "a" not in q._failures

    run(main())
