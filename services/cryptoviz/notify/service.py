"""The delivery loop: a durable pull consumer on `cryptoviz.alerts.>`, each alert to each of its targets.

Exactly once per (alert, target), as far as a remote service allows:
- a delivery is recorded right after the target accepted it, by its receipt
  (`cryptoviz.receipts.<alert id>.<target>`, in the stream); a redelivered or re-published alert
  skips every target whose last receipt is final (delivered, or failed for good);
- the alert is acked only when every target is settled (delivered, or failed for good and
  dead-lettered); a temporary failure naks it with a growing delay, so retries survive restarts;
- what cannot be closed: a crash after the remote accepted and before the record landed sends that
  one notification again on redelivery (at-least-once inside that window, never lost);
- a message that is not an alert, or one redelivered more often than NOTIFY_MAX_ATTEMPTS allows (its
  handling itself keeps failing), is dead-lettered on `cryptoviz.notify.deadletter._unusable` and
  acked; the consumer's `max_deliver` bounds the rest.

Every outcome is a receipt, which the ingester also stores and serves, so the dashboard and the
operator see delivery state without talking to us.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import FetchTimeoutError, NotFoundError
from pydantic import ValidationError

from cryptoviz.core import alert_contract as ac
from cryptoviz.core import contract
from cryptoviz.core.deadletter import deliveries, park
from cryptoviz.core.nats import bind_durable
from cryptoviz.notify import metrics
from cryptoviz.notify.message import render
from cryptoviz.notify.ratelimit import TokenBucket
from cryptoviz.notify.send import Outcome, Sender
from cryptoviz.notify.settings import NotifySettings
from cryptoviz.notify.targets import Target, Targets

log = logging.getLogger("cryptoviz.notify")

DURABLE_NAME = ac.NOTIFY_CONSUMER
ACK_WAIT = 30.0
RECEIPT_TIMEOUT = 5.0
MAX_FETCH = 256
NO_TARGET = "none"
MAX_IN_FLIGHT = 1000
"""Alerts handled at once (the consumer's max_ack_pending)."""


def retry_delay(attempt: int, backoff: float, max_backoff: float) -> float:
    """Seconds before the next try after `attempt` tries: backoff, 2×, 4×, … up to max_backoff."""
    return min(backoff * 2 ** max(attempt - 1, 0), max_backoff)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _parse_time(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def make_senders(targets: Targets, timeout: float) -> dict[str, Sender]:
    """One Sender per target; raises TargetError (naming the target, not the URL) for an invalid URL."""
    return {t.name: Sender(t, timeout) for t in targets.all()}


class Notifier:
    def __init__(self, settings: NotifySettings, targets: Targets, senders: dict[str, Sender], nc: Client) -> None:
        self.settings = settings
        self.targets = targets
        self.nc = nc
        self.js = nc.jetstream()
        self.attached = False
        self.senders = senders
        self.buckets = {
            t.name: TokenBucket.share_of(settings.rate_limit, settings.rate_burst, settings.replicas)
            for t in targets.all()
        }
        self.pool = ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="notify-send")
        self._tasks: set[asyncio.Task] = set()
        self._busy: set[tuple[str, str]] = set()
        self._unsettled: dict[int, Msg] = {}  # by id(): a Msg is not hashable
        self._heartbeats: asyncio.Task | None = None

    # -- loop ----------------------------------------------------------------------------------

    async def _attach(self):
        await ac.ensure_alerts_stream(self.js, update=False)  # the ingester manages it
        subject = f"{ac.ALERTS_PREFIX}.>"
        config = ConsumerConfig(
            durable_name=DURABLE_NAME,
            filter_subject=subject,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=ACK_WAIT,
            max_deliver=self._last_delivery + 2,  # one to park it on, one spare
            max_ack_pending=MAX_IN_FLIGHT,
        )
        sub = await bind_durable(self.js, ac.STREAM_NAME, config)
        self.attached = True
        log.info(
            "attached durable consumer %s on %s (%d targets, one of %d replicas)",
            DURABLE_NAME,
            subject,
            len(self.senders),
            self.settings.replicas,
        )
        return sub

    async def run(self, stopping: asyncio.Event) -> None:
        """Fetch and handle alerts until `stopping`; then `drain` lets those in progress settle."""
        self._heartbeats = asyncio.create_task(self._heartbeat())
        sub, delay = None, 0.5
        while not stopping.is_set():
            try:
                if sub is None:
                    sub = await self._attach()
                room = MAX_IN_FLIGHT - len(self._tasks)
                if room <= 0:
                    await asyncio.sleep(0.05)
                    continue
                try:
                    msgs = await sub.fetch(min(MAX_FETCH, room), timeout=1.0)
                except (TimeoutError, FetchTimeoutError):
                    continue
                for msg in msgs:
                    task = asyncio.create_task(self.handle(msg))
                    self._tasks.add(task)
                    metrics.IN_FLIGHT.set(len(self._tasks))
                    task.add_done_callback(self._done)
                delay = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS away: log, back off, re-attach
                sub, self.attached = None, False
                metrics.ERRORS.labels(kind=type(exc).__name__).inc()
                log.warning("notify loop error: %s; retrying in %.1fs", exc or type(exc).__name__, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), delay)
                delay = min(delay * 2, 5.0)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        metrics.IN_FLIGHT.set(len(self._tasks))
        if not task.cancelled() and task.exception() is not None:
            metrics.ERRORS.labels(kind=type(task.exception()).__name__).inc()
            log.warning("alert left for redelivery: %s", task.exception() or type(task.exception()).__name__)

    async def drain(self, timeout: float) -> None:
        """On shutdown: let alerts in progress settle; the rest are redelivered to the next process."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        if self._heartbeats is not None:
            self._heartbeats.cancel()
        self.pool.shutdown(wait=False, cancel_futures=True)

    # -- one alert -----------------------------------------------------------------------------

    @property
    def _last_delivery(self) -> int:
        """Deliveries an alert can need: one per attempt, and one to settle after the last failed one."""
        return self.settings.max_attempts + 1

    async def handle(self, msg: Msg) -> None:
        if deliveries(msg) > self._last_delivery:
            await self._unusable(msg, "max_deliveries", f"delivered {deliveries(msg)} times, never settled")
            return
        try:
            alert = ac.AlertMessage.model_validate_json(msg.data)
        except Exception as exc:  # anything wrong with one message spoils only that message
            problem = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else type(exc).__name__
            await self._unusable(msg, "bad_alert", f"malformed alert message: {problem}")
            return
        attempt = deliveries(msg)
        targets, unknown = self.targets.resolve(alert.notify)
        total = max(1, len(targets) + len(unknown))
        self._unsettled[id(msg)] = msg
        try:
            fired = _parse_time(alert.fired_at)
            too_old = (
                self.settings.max_age_seconds > 0
                and fired is not None
                and _utc_now() - fired > timedelta(seconds=self.settings.max_age_seconds)
            )
            if too_old:
                reason = f"expired: fired more than {self.settings.max_age_seconds:g}s ago (NOTIFY_MAX_AGE)"
                jobs = [self._give_up(alert, t.name, attempt, total, reason) for t in targets]
            else:
                jobs = [self._deliver(alert, t, attempt, total, fired) for t in targets]
            jobs += [
                self._give_up(alert, name, attempt, total, f"no target named {name!r} in NOTIFY_TARGETS_FILE")
                for name in unknown
            ]
            if not targets and not unknown:
                jobs.append(self._give_up(alert, NO_TARGET, attempt, total, "no notification target configured"))
            if len(jobs) == 1:  # the usual case: no gather (a task per job) needed
                settled = [await self._settled(jobs[0], alert)]
            else:
                settled = await asyncio.gather(*(self._settled(job, alert) for job in jobs))
        finally:
            self._unsettled.pop(id(msg), None)
        if all(settled):
            await msg.ack()
        else:
            await msg.nak(delay=retry_delay(attempt, self.settings.backoff, self.settings.max_backoff))

    async def _unusable(self, msg: Msg, reason: str, detail: str) -> None:
        """Dead-letter a message no target can be given (one log line), counted in errors{kind=reason}."""
        if await park(self.js, msg, ac.UNUSABLE_DEADLETTER, reason):
            metrics.ERRORS.labels(kind=reason).inc()
            log.warning("dead-lettering an alert message: %s", detail, extra={"subject": msg.subject})

    @staticmethod
    async def _settled(job, alert: ac.AlertMessage) -> bool:
        """A target whose delivery or record hit an error (NATS busy, say) is simply not settled yet:
        the alert is retried after the backoff, the other targets keep what they reached."""
        try:
            return await job
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            metrics.ERRORS.labels(kind=type(exc).__name__).inc()
            log.warning("alert %s: %s; will retry", alert.alert_id, exc or type(exc).__name__)
            return False

    async def _heartbeat(self) -> None:
        """Keep JetStream from redelivering alerts that are only waiting (rate limit, slow target): every
        third of ACK_WAIT, each alert not settled yet is reported in progress (one loop for all of them,
        not a task and a timer per alert)."""
        while True:
            await asyncio.sleep(ACK_WAIT / 3)
            for key, msg in list(self._unsettled.items()):
                if key in self._unsettled:  # not settled while an earlier one was reported
                    with contextlib.suppress(Exception):
                        await msg.in_progress()

    async def _settled_before(self, alert: ac.AlertMessage, target: str) -> bool:
        """Already delivered or given up (a redelivery, a restart, a re-published alert)?"""
        try:
            last = await self.js.get_last_msg(ac.STREAM_NAME, ac.receipt_subject(alert.alert_id, target))
        except NotFoundError:
            return False
        try:
            settled = ac.Receipt.model_validate_json(last.data).status != "retrying"
        except ValidationError:
            return False
        if settled:
            metrics.SKIPPED.inc()
        return settled

    async def _deliver(self, alert: ac.AlertMessage, target: Target, attempt: int, total: int, fired) -> bool:
        """True when settled (delivered or failed for good), False when it should be tried again."""
        if (alert.alert_id, target.name) in self._busy:
            return False  # the same alert is being handled by an earlier delivery of it
        if await self._settled_before(alert, target.name):
            return True
        self._busy.add((alert.alert_id, target.name))
        try:
            wait = self.buckets[target.name].reserve(time.monotonic())
            if wait > 0:
                await asyncio.sleep(wait)
            sender = self.senders[target.name]
            title, body = render(alert, sender.format, self.settings.dashboard_url)
            started = time.perf_counter()
            outcome: Outcome = await asyncio.get_running_loop().run_in_executor(self.pool, sender.send, title, body)
            metrics.SEND_SECONDS.labels(target=target.name).observe(time.perf_counter() - started)
            if outcome.delivered:
                now = _utc_now()
                latency = (now - fired).total_seconds() if fired else None
                receipt = self._receipt(alert, target.name, "delivered", attempt, total, None, latency)
                await self._publish_receipt(receipt)  # the record, at once: the window is this one round trip
                metrics.DELIVERED.labels(target=target.name).inc()
                if latency is not None:
                    metrics.LATENCY.observe(max(latency, 0.0))
                return True
            if outcome.permanent or attempt >= self.settings.max_attempts:
                reason = outcome.reason if outcome.permanent else f"gave up after {attempt} attempts: {outcome.reason}"
                await self._give_up(alert, target.name, attempt, total, reason, checked=True)
                return True
            metrics.RETRIED.labels(target=target.name).inc()
            log.info(
                "delivery to %s failed (%s); retrying", target.name, outcome.reason, extra={"alert": alert.alert_id}
            )
            await self._publish_receipt(self._receipt(alert, target.name, "retrying", attempt, total, outcome.reason))
            return False
        finally:
            self._busy.discard((alert.alert_id, target.name))

    async def _give_up(
        self, alert: ac.AlertMessage, target: str, attempt: int, total: int, reason: str, checked: bool = False
    ) -> bool:
        """Failed for good: dead-lettered with the reason, then receipted (the record). Settled."""
        if not checked and await self._settled_before(alert, target):
            return True
        receipt = self._receipt(alert, target, "failed", attempt, total, reason)
        metrics.FAILED.labels(target=target, reason=reason.split(":")[0][:40]).inc()
        log.warning("alert %s not delivered to %s: %s", alert.alert_id, target, reason)
        headers = {
            contract.MSG_ID_HEADER: f"dl-{alert.alert_id}-{ac.target_key(target)}",
            "Cryptoviz-Target": target,
            "Cryptoviz-Reason": reason[:200],
        }
        payload = alert.model_dump_json(by_alias=True).encode()
        await self.js.publish(ac.deadletter_subject(target), payload, headers=headers)
        await self._publish_receipt(receipt)
        return True

    @staticmethod
    def _receipt(
        alert: ac.AlertMessage,
        target: str,
        status: ac.ReceiptStatus,
        attempt: int,
        total: int,
        reason: str | None,
        latency: float | None = None,
    ) -> ac.Receipt:
        at = _utc_now().isoformat().replace("+00:00", "Z")
        return ac.Receipt(
            alert_id=alert.alert_id,
            target=target,
            status=status,
            attempts=attempt,
            reason=reason,
            at=at,
            latency_seconds=latency,
            targets=total,
        )

    async def _publish_receipt(self, receipt: ac.Receipt) -> None:
        """Publish at once and wait for JetStream's ack. publish_async shares one reply subscription
        among all receipts in flight instead of a request (and its wait_for) per receipt."""
        stored = await self.js.publish_async(
            ac.receipt_subject(receipt.alert_id, receipt.target),
            receipt.model_dump_json(by_alias=True).encode(),
            headers={contract.MSG_ID_HEADER: ac.receipt_msg_id(receipt)},
        )
        async with asyncio.timeout(RECEIPT_TIMEOUT):  # an ack lost with the connection: retried later
            await stored
