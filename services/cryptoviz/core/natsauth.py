"""Who may do what on NATS: CryptoViz's users and their subject permissions, least privilege.

Nothing is anonymous. Each process connects as its own user and may publish and subscribe only on the
subjects its work needs; anything else is refused by the server:

- `scraper` (the CronJob, the backfill Jobs): publish quotes and candles, and create the quotes
  stream if it is missing (never change or delete it); no consumer, no read of any stream;
- `ingester`: manage both streams, consume its three durable consumers (quotes, candles, receipts),
  publish dead letters and fired alerts;
- `notify`: consume alerts with its durable consumer, read the last receipt of an alert, publish
  receipts and its own dead letters; create the alerts stream only if it is missing.

Replies go to per-user inboxes (`_INBOX.<user>.>`, `core.nats.connect` sets the prefix), so no user
can subscribe to another's replies, which carry the messages a pull consumer delivers.

The chart renders the same lists (charts/cryptoviz/templates/_helpers.tpl, `cryptoviz.natsPermissions`;
tests/test_nats_auth.py checks they match); `cryptoviz dev` writes them into its server's config here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cryptoviz.core import alert_contract as ac
from cryptoviz.core import contract

QUOTES = contract.STREAM_NAME
ALERTS = ac.STREAM_NAME


def inbox_prefix(user: str) -> str:
    return f"_INBOX.{user}"


def _stream(name: str, *, manage: bool) -> tuple[str, ...]:
    """Stream info and create; update too when `manage` (a create of an existing stream changes nothing)."""
    verbs = ("INFO", "CREATE", "UPDATE") if manage else ("INFO", "CREATE")
    return tuple(f"$JS.API.STREAM.{verb}.{name}" for verb in verbs)


def _consumer(stream: str, durable: str) -> tuple[str, ...]:
    """Create-or-update, info, fetch and ack of one durable pull consumer."""
    return (
        f"$JS.API.CONSUMER.CREATE.{stream}.{durable}.>",
        f"$JS.API.CONSUMER.INFO.{stream}.{durable}",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}",
        f"$JS.ACK.{stream}.{durable}.>",
    )


@dataclass(frozen=True, slots=True)
class Role:
    user: str
    publish: tuple[str, ...]

    @property
    def subscribe(self) -> tuple[str, ...]:
        return (f"{inbox_prefix(self.user)}.>",)

    def permissions(self) -> dict[str, dict[str, list[str]]]:
        """As nats-server's `permissions` block (and the chart's JSON)."""
        return {"publish": {"allow": list(self.publish)}, "subscribe": {"allow": list(self.subscribe)}}


ROLES: dict[str, Role] = {
    "scraper": Role(
        "scraper",
        (f"{contract.SUBJECT_PREFIX}.>", f"{contract.CANDLES_PREFIX}.>", *_stream(QUOTES, manage=False)),
    ),
    "ingester": Role(
        "ingester",
        (
            *_stream(QUOTES, manage=True),
            *_stream(ALERTS, manage=True),
            *_consumer(QUOTES, contract.QUOTES_CONSUMER),
            *_consumer(QUOTES, contract.CANDLES_CONSUMER),
            *_consumer(ALERTS, ac.RECEIPTS_CONSUMER),
            f"{contract.DEADLETTER_PREFIX}.>",
            f"{ac.ALERTS_PREFIX}.>",
        ),
    ),
    "notify": Role(
        "notify",
        (
            *_stream(ALERTS, manage=False),
            *_consumer(ALERTS, ac.NOTIFY_CONSUMER),
            f"$JS.API.STREAM.MSG.GET.{ALERTS}",
            f"{ac.RECEIPTS_PREFIX}.>",
            f"{ac.DEADLETTER_PREFIX}.>",
        ),
    ),
}


def server_config(*, host: str, port: int, store_dir: Path, passwords: dict[str, str]) -> str:
    """A nats-server config: JetStream in `store_dir`, listening on host:port, the ROLES' users with these
    passwords and nothing anonymous (JSON string literals: any character is safe)."""
    users = ",\n".join(
        f"    {{user: {json.dumps(role.user)}, password: {json.dumps(passwords[name])}, "
        f"permissions: {json.dumps(role.permissions())}}}"
        for name, role in ROLES.items()
    )
    return (
        f"host: {json.dumps(host)}\nport: {port}\n"
        f"jetstream {{\n  store_dir: {json.dumps(str(store_dir))}\n}}\n"
        f"authorization {{\n  users: [\n{users}\n  ]\n}}\n"
    )
