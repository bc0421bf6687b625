"""The alert contract between the ingester and `cryptoviz notify`, both ways through JetStream.

Stream `CRYPTOVIZ_ALERTS` holds:
- `cryptoviz.alerts.<SYMBOL>`: one fired alert (JSON, see `AlertMessage`), published by the ingester
  from its outbox after the alert row is committed, with `Nats-Msg-Id` = the alert id (rule and
  trigger time), so re-publishing after a crash stores nothing twice;
- `cryptoviz.receipts.<alert id>.<target key>`: one delivery receipt per target and attempt
  (`Receipt`), published by the notifier and consumed by the ingester into DuckDB, so the API (and
  through it the dashboard and the operator) shows delivery state without anyone talking to the
  notifier. The last receipt on that subject is also the notifier's own record of what it has
  delivered: a redelivered or re-published alert skips every target whose last receipt is final;
- `cryptoviz.notify.deadletter.<target>`: the alert and the reason, for a target that refused it for
  good (a 4xx, an unknown target name, retries exhausted); `cryptoviz.notify.deadletter._unusable` for
  a message the notifier cannot use at all (malformed, or whose handling failed at every delivery).
"""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import timedelta
from typing import Literal

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, StorageType, StreamConfig
from pydantic import BaseModel, ConfigDict, Field

from cryptoviz.core import contract

log = logging.getLogger(__name__)

STREAM_NAME = "CRYPTOVIZ_ALERTS"
ALERTS_PREFIX = contract.ALERTS_PREFIX
RECEIPTS_PREFIX = "cryptoviz.receipts"
DEADLETTER_PREFIX = "cryptoviz.notify.deadletter"
STREAM_SUBJECTS = (f"{ALERTS_PREFIX}.>", f"{RECEIPTS_PREFIX}.>", f"{DEADLETTER_PREFIX}.>")
RECEIPTS_CONSUMER = "cryptoviz-ingester-receipts"
NOTIFY_CONSUMER = "cryptoviz-notify"
UNUSABLE_DEADLETTER = f"{DEADLETTER_PREFIX}._unusable"
"""Not a target's: target names start with a letter or digit."""
DUPLICATE_WINDOW = timedelta(hours=24)
"""Longer than any outage after which the outbox re-publishes; the receipts catch the rest."""
MAX_AGE = timedelta(days=7)
"""Alerts and receipts age out together, so no alert still in the stream lacks its receipts."""
SCHEMA_VERSION = 1

ReceiptStatus = Literal["delivered", "retrying", "failed"]
_SUBJECT_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


class AlertMessage(BaseModel):
    """A fired alert as published (the `alerts` row plus the schema version)."""

    model_config = ConfigDict(extra="ignore")

    schema_: int = Field(SCHEMA_VERSION, alias="schema")
    alert_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    rule_id: str
    symbol: str
    name: str | None = None
    condition: str
    threshold: float
    window_seconds: float | None = None
    price: float | None = None
    change_24h: float | None = None
    change_pct: float | None = None
    fired_at: str
    quote_timestamp: str | None = None
    message: str
    provider: str | None = None
    coin_id: str | None = None
    notify: list[str] = Field(default_factory=list)


class Receipt(BaseModel):
    """What happened to one alert at one target: `delivered`, `retrying` (a temporary failure, will be
    retried) or `failed` (for good, with the reason; the alert is dead-lettered for that target)."""

    model_config = ConfigDict(extra="ignore")

    schema_: int = Field(SCHEMA_VERSION, alias="schema")
    alert_id: str
    target: str
    status: ReceiptStatus
    attempts: int = Field(ge=1)
    reason: str | None = None
    at: str
    latency_seconds: float | None = None
    targets: int | None = Field(None, ge=1, description="How many targets this alert goes to in all.")

    @property
    def rank(self) -> tuple[int, int]:
        """Later beats earlier; a final state is never overwritten by a late `retrying`."""
        return (0 if self.status == "retrying" else 1, self.attempts)


def alert_subject(symbol: str) -> str:
    return f"{ALERTS_PREFIX}.{symbol}"  # tickers are [A-Z0-9.-]: valid subject tokens


def receipt_subject(alert_id: str, target: str) -> str:
    return f"{RECEIPTS_PREFIX}.{alert_id}.{target_key(target)}"


def deadletter_subject(target: str) -> str:
    return f"{DEADLETTER_PREFIX}.{_SUBJECT_UNSAFE.sub('_', target)}"


def receipt_msg_id(receipt: Receipt) -> str:
    return f"r-{receipt.alert_id}-{target_key(receipt.target)}-{receipt.status}-{receipt.attempts}"


def target_key(target: str) -> str:
    """A target name as a subject / message-id token: `team/2` → `team_2-<hash>` (unambiguous, safe)."""
    safe = _SUBJECT_UNSAFE.sub("_", target)
    if safe == target:
        return target
    return f"{safe}-{hashlib.sha256(target.encode()).hexdigest()[:8]}"


def stream_config() -> StreamConfig:
    return StreamConfig(
        name=STREAM_NAME,
        subjects=list(STREAM_SUBJECTS),
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW.total_seconds(),
        max_age=MAX_AGE.total_seconds(),
        discard=DiscardPolicy.OLD,
        description=f"CryptoViz fired alerts and their delivery receipts, schema v{SCHEMA_VERSION}",
    )


async def ensure_alerts_stream(js: JetStreamContext, *, update: bool = True) -> None:
    """Create the stream or bring it to the contract's settings (`update=False`: only create a missing one,
    as the notifier may); safe for every process to call."""
    from cryptoviz.core.nats import provide_stream  # core.nats imports this module (through natsauth)

    await provide_stream(js, stream_config(), update=update)
