"""Dead letters and bounded deliveries, shared by every JetStream consumer (ingester and notifier).

A message that cannot be used (undecodable, invalid, or delivered too often) is republished with its
original payload to a dead-letter subject, with the reason and where it came from in headers, and
then acked: it is never redelivered, never lost (the dead letters live in the same stream), and
never holds up the messages behind it.

Deliveries are bounded twice. Each consumer parks a message delivered MAX_DELIVER times, before even
decoding it: whatever it is, it crashed or stalled its consumer that often (a message that merely
fails to decode is parked on its first delivery). The durable consumer's own `max_deliver` is one more,
so even a crash while parking leaves one last delivery to park it on.
"""

from __future__ import annotations

import logging

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from cryptoviz.core.contract import MSG_ID_HEADER

log = logging.getLogger(__name__)

MAX_DELIVER = 10
"""Deliveries after which a message is dead-lettered unread as `max_deliveries`."""
JETSTREAM_MAX_DELIVER = MAX_DELIVER + 1
"""The durable consumers' `max_deliver`: one spare delivery for the parking itself."""
REASON_HEADER = "Cryptoviz-Reason"
SUBJECT_HEADER = "Cryptoviz-Original-Subject"
MSG_ID_ORIGINAL_HEADER = "Cryptoviz-Original-Msg-Id"


def deliveries(msg: Msg) -> int:
    return int(msg.metadata.num_delivered or 1)


def headers_for(msg: Msg, reason: str) -> dict[str, str]:
    """The original headers without any `Nats-*` one (a hostile `Nats-Expected-*` or `Nats-Rollup` would make
    the republish fail or do harm), plus the reason, the origin, and a message id of the stream sequence,
    so parking the same message twice (after a crash) stores it once."""
    headers = {k: v for k, v in (msg.headers or {}).items() if not k.lower().startswith("nats-")}
    meta = msg.metadata
    headers[REASON_HEADER] = reason
    headers[SUBJECT_HEADER] = msg.subject
    headers[MSG_ID_HEADER] = f"dl-{meta.stream}-{meta.sequence.stream}"
    if msg.headers and msg.headers.get(MSG_ID_HEADER):
        headers[MSG_ID_ORIGINAL_HEADER] = msg.headers[MSG_ID_HEADER]
    return headers


async def republish(js: JetStreamContext, msg: Msg, subject: str, reason: str) -> bool:
    """Republish `msg` on `subject` (not acked yet); False when JetStream did not take the dead letter."""
    try:
        await js.publish(subject, msg.data, headers=headers_for(msg, reason))
    except Exception as exc:  # NATS away, payload at the limit: the next delivery tries again
        log.warning("could not dead-letter a message (%s); it will be redelivered", str(exc) or type(exc).__name__)
        return False
    return True


async def park(js: JetStreamContext, msg: Msg, subject: str, reason: str) -> bool:
    """Republish `msg` on `subject` and ack it; False (and the message left unacked, so it comes back, its
    deliveries bounded) when JetStream did not take the dead letter."""
    if not await republish(js, msg, subject, reason):
        return False
    await msg.ack()
    return True
