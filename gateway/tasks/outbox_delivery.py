"""Delivery of the account outboxes' events (metering.payments.outbox), each POSTed, signed, to
the payment side, and removed once the receiver answers 2xx:
- `topup.requested` (auto top-up) to GATEWAY_TOPUP_WEBHOOK_URL, signed with its secret;
- `refund.requested` (a refund the account holder made with the Refund button) to
  GATEWAY_PAYMENTS_REQUEST_URL, signed with GATEWAY_PAYMENTS_REQUEST_SECRET.

Failures are retried with exponential backoff (1 s, 2 s, 4 s, ... up to 5 minutes). A top-up
request is dropped as failed after `topup_max_attempts`, which lets a later settlement ask again;
a refund request is never dropped (the credit is already taken back: the money must follow), and
is logged as an error once it has failed that often. The events are in Redis, so a restart loses
none (only the backoff timers, kept here, start over). The receiver dedupes on the event id (also
sent as Idempotency-Key): a retry after a lost acknowledgement must not buy or refund twice.
"""

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from config.settings import Settings
from gateway.billing.payment_requests import signed_post
from gateway.observability.metrics import OUTBOX_EVENTS
from gateway.state import SERVICES, SETTINGS
from gateway.tasks.background import stop_task
from metering.money import format_usd
from metering.payments.outbox import Outbox, OutboxEvent, RefundRequest, TopupRequest
from metering.transport.client import STORE_ERRORS

log = logging.getLogger("gateway.outbox")
MAX_BACKOFF_SECONDS = 300.0
REINDEX_EVERY_SECONDS = 600.0


def event_body(event: OutboxEvent) -> dict[str, object]:
    if isinstance(event, RefundRequest):
        data: dict[str, object] = {
            "account_id": event.account_id,
            "purchase_id": event.purchase_id,
            "payment_id": event.payment_id,
            "method": event.method,
            "amount": format_usd(event.purchase_amount),
            "refunded": format_usd(event.refunded),
            "fee_kept": format_usd(event.fee_kept),
        }
        kind = "refund.requested"
    else:
        data = {
            "account_id": event.account_id,
            "amount": format_usd(event.amount),
            "threshold": format_usd(event.threshold),
            "balance": format_usd(event.balance),
        }
        kind = "topup.requested"
    return {"id": event.id, "type": kind, "created": event.created_ms // 1000, "data": data}


@dataclass(frozen=True, slots=True)
class Destination:
    url: str
    secret: str


def destinations(settings: Settings) -> dict[type, Destination]:
    """Where each kind of event goes; a kind with no destination waits in its outbox."""
    found: dict[type, Destination] = {}
    if settings.topup_webhook_url and settings.topup_webhook_secret:
        secret = settings.topup_webhook_secret.get_secret_value()
        found[TopupRequest] = Destination(settings.topup_webhook_url, secret)
    if settings.payments_request_url and settings.payments_request_secret:
        secret = settings.payments_request_secret.get_secret_value()
        found[RefundRequest] = Destination(settings.payments_request_url, secret)
    return found


class OutboxDelivery:
    def __init__(self, outbox: Outbox, to: dict[type, Destination], max_attempts: int) -> None:
        self._outbox = outbox
        self._to = to
        self._max_attempts = max_attempts
        self._holder = f"{os.getpid()}-{id(self)}"
        self._retries: dict[str, tuple[int, float]] = {}  # event id -> (attempts, next try)

    async def deliver_due(self, session: aiohttp.ClientSession) -> int:
        """One pass over the outboxes; the number of events delivered."""
        delivered = 0
        waiting = 0
        for account_id in await self._outbox.accounts_with_events():
            if not await self._outbox.take_lease(account_id, self._holder):
                continue
            try:
                events = await self._outbox.pending(account_id)
                waiting += len(events)
                for event in events:
                    delivered += await self._try(session, event)
            finally:
                await self._outbox.release_lease(account_id, self._holder)
        OUTBOX_EVENTS.set(waiting)
        return delivered

    async def _try(self, session: aiohttp.ClientSession, event: OutboxEvent) -> int:
        attempts, next_try = self._retries.get(event.id, (0, 0.0))
        destination = self._to.get(type(event))
        if destination is None or time.monotonic() < next_try:
            return 0
        kind = "refund" if isinstance(event, RefundRequest) else "auto top-up"
        status = await signed_post(
            session, destination.url, destination.secret, event_body(event), event.id
        )
        if status is not None and 200 <= status < 300:
            await self._outbox.delivered(event)
            self._retries.pop(event.id, None)
            return 1
        log.warning(
            "%s request %s: receiver %s",
            kind,
            event.id,
            "unreachable" if status is None else f"answered {status}",
        )
        attempts += 1
        if attempts >= self._max_attempts and isinstance(event, TopupRequest):
            await self._outbox.failed(event)
            self._retries.pop(event.id, None)
            log.error(
                "auto top-up %s for account %s failed after %d attempts",
                event.id,
                event.account_id,
                attempts,
            )
            return 0
        if attempts == self._max_attempts:
            log.error(
                "refund request %s for account %s still undelivered after %d attempts; "
                "retrying every %d s",
                event.id,
                event.account_id,
                attempts,
                MAX_BACKOFF_SECONDS,
            )
        wait = min(2.0 ** (attempts - 1), MAX_BACKOFF_SECONDS)
        self._retries[event.id] = (attempts, time.monotonic() + wait)
        return 0


OUTBOX_DELIVERY = web.AppKey("outbox_delivery", OutboxDelivery)


async def outbox_worker(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: deliver the outboxes' events while the app runs (when a URL is set)."""
    settings = app[SETTINGS]
    to = destinations(settings)
    if not to:
        yield
        return
    outbox = app[SERVICES].outbox
    delivery = OutboxDelivery(outbox, to, settings.topup_max_attempts)
    app[OUTBOX_DELIVERY] = delivery

    async def loop() -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        reindexed = -REINDEX_EVERY_SECONDS  # the first pass also looks for unindexed outboxes
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                await asyncio.sleep(settings.topup_poll_seconds)
                try:
                    if time.monotonic() - reindexed > REINDEX_EVERY_SECONDS:
                        await outbox.reindex()
                        reindexed = time.monotonic()
                    await delivery.deliver_due(session)
                except STORE_ERRORS as exc:
                    log.warning("outbox pass skipped: redis %s", type(exc).__name__)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        await stop_task(task)
