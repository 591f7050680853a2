"""Auto top-up delivery: each queued `topup.requested` event is POSTed, signed, to
GATEWAY_TOPUP_WEBHOOK_URL, and removed from the account's outbox once the receiver answers 2xx.

Failures are retried with exponential backoff (1 s, 2 s, 4 s, ... up to 5 minutes); after
`topup_max_attempts` the request is dropped as failed, which lets a later settlement ask again.
The events themselves are in Redis, so a restart loses none (only the backoff timers, kept here,
start over). The receiver should treat the event id (also sent as Idempotency-Key) as the
purchase's idempotency key: a retry after a lost acknowledgement must not buy twice.
"""

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator

import aiohttp
import orjson
from aiohttp import web

from gateway.api.signing import SIGNATURE_HEADER, sign
from gateway.observability.metrics import OUTBOX_EVENTS
from gateway.state import SERVICES, SETTINGS
from gateway.tasks.background import stop_task
from metering.money import format_usd
from metering.outbox import Outbox, TopupRequest
from metering.transport.client import STORE_ERRORS

log = logging.getLogger("gateway.topup")
MAX_BACKOFF_SECONDS = 300.0
REINDEX_EVERY_SECONDS = 600.0


def event_body(event: TopupRequest) -> bytes:
    return orjson.dumps(
        {
            "id": event.id,
            "type": "topup.requested",
            "created": event.created_ms // 1000,
            "data": {
                "account_id": event.account_id,
                "amount": format_usd(event.amount),
                "threshold": format_usd(event.threshold),
                "balance": format_usd(event.balance),
            },
        }
    )


class TopupDelivery:
    def __init__(self, outbox: Outbox, url: str, secret: str, max_attempts: int) -> None:
        self._outbox = outbox
        self._url = url
        self._secret = secret
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
                    attempts, next_try = self._retries.get(event.id, (0, 0.0))
                    if time.monotonic() < next_try:
                        continue
                    if await self._send(session, event):
                        await self._outbox.delivered(event)
                        self._retries.pop(event.id, None)
                        delivered += 1
                    elif attempts + 1 >= self._max_attempts:
                        await self._outbox.failed(event)
                        self._retries.pop(event.id, None)
                        log.error(
                            "auto top-up %s for account %s failed after %d attempts",
                            event.id,
                            event.account_id,
                            attempts + 1,
                        )
                    else:
                        wait = min(2.0**attempts, MAX_BACKOFF_SECONDS)
                        self._retries[event.id] = (attempts + 1, time.monotonic() + wait)
            finally:
                await self._outbox.release_lease(account_id)
        OUTBOX_EVENTS.set(waiting)
        return delivered

    async def _send(self, session: aiohttp.ClientSession, event: TopupRequest) -> bool:
        body = event_body(event)
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": event.id,
            SIGNATURE_HEADER: sign(self._secret, body, int(time.time())),
        }
        try:
            async with session.post(self._url, data=body, headers=headers) as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    return True
                log.warning("auto top-up %s: receiver answered %d", event.id, resp.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("auto top-up %s: receiver unreachable (%s)", event.id, type(exc).__name__)
        return False


TOPUP = web.AppKey("topup", TopupDelivery)


async def topup_worker(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: deliver auto top-up requests while the app runs (when a URL is set)."""
    settings = app[SETTINGS]
    if not settings.topup_webhook_url:
        yield
        return
    secret = (
        settings.topup_webhook_secret.get_secret_value() if settings.topup_webhook_secret else ""
    )
    outbox = app[SERVICES].outbox
    delivery = TopupDelivery(
        outbox, settings.topup_webhook_url, secret, settings.topup_max_attempts
    )
    app[TOPUP] = delivery

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
                    log.warning("auto top-up pass skipped: redis %s", type(exc).__name__)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        await stop_task(task)
