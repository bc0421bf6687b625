"""The ingester's shutdown never waits forever for a background task that loses a cancel (Python
3.11's `asyncio.wait_for` can swallow one; an ingester once hung on SIGTERM after NATS went away)."""

from __future__ import annotations

import asyncio
import time

from cryptoviz.ingester.service import _cancel


async def _loses_the_first_cancel(log: list[str]) -> None:
    lost = False
    while True:
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            if lost:
                log.append("cancelled")
                raise
            lost = True  # as a lost cancel looks from the task: it goes on looping
            log.append("lost")


def test_a_task_that_loses_a_cancel_is_asked_again_and_shutdown_goes_on():
    async def scenario() -> tuple[list[str], float, bool]:
        log: list[str] = []
        stubborn = asyncio.create_task(_loses_the_first_cancel(log))
        plain = asyncio.create_task(asyncio.sleep(3600))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await _cancel([stubborn, plain], timeout=0.2)
        return log, time.monotonic() - started, stubborn.cancelled() and plain.cancelled()

    log, took, cancelled = asyncio.run(scenario())
    assert log == ["lost", "cancelled"] and cancelled
    assert took < 1.0


def test_a_task_that_never_stops_does_not_hold_the_shutdown():
    async def scenario() -> float:
        async def deaf() -> None:
            while True:
                try:
                    await asyncio.sleep(0.01)
                except asyncio.CancelledError:
                    continue

        task = asyncio.create_task(deaf())
        await asyncio.sleep(0.02)
        started = time.monotonic()
        await _cancel([task], timeout=0.1)
        took = time.monotonic() - started
        task.cancel()  # clean up the test's own loop: the deaf task goes on ignoring it
        return took

    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(scenario()) < 1.0
    finally:
        loop.close()
