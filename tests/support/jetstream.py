"""Conditions on JetStream itself, for tests that run their own nats-server (no credentials)."""

from __future__ import annotations

import asyncio

import nats
from cryptoviz.core import contract

from support.wait import wait_for


async def _unsettled(url: str) -> dict[str, int]:
    """Per durable consumer of the stream: messages not yet delivered plus delivered but not acked."""
    client = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
    try:
        js = client.jetstream()
        return {
            info.name: int(info.num_pending or 0) + int(info.num_ack_pending or 0)
            for info in await js.consumers_info(contract.STREAM_NAME)
            if info.config.durable_name  # the services' own; a test's ephemeral reader may leave messages unacked
        }
    finally:
        await client.close()


def wait_all_acked(url: str, timeout: float = 30.0) -> dict[str, int]:
    """Wait until every consumer has acked everything published: no redelivery can come after this.

    Stronger than sleeping past ACK_WAIT: a message still unacked here is waited for, not missed.
    """
    last: dict[str, int] = {}

    def settled() -> bool:
        last.update(asyncio.run(_unsettled(url)))
        return bool(last) and not any(last.values())

    try:
        wait_for(settled, timeout, "every JetStream consumer to ack everything")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; unacked per consumer: {last}") from None
    return last
