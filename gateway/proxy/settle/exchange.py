"""One forwarded request from admission to settlement: what it used, how it ended, and the one
settlement it gets whatever happens (success, provider failure, client gone, a bug)."""

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from gateway.clock import Clock
from gateway.models import ResolvedModel
from gateway.observability.metrics import (
    INSURED,
    REDIS_ERRORS,
    REDIS_SECONDS,
    SPEND,
    SWITCH,
    TOKENS,
    labelled,
)
from gateway.proxy.settle.journal import SettlementJournal
from gateway.proxy.settle.settling import Settling
from metering.admission import Held, Metering
from metering.leasing.lease import LeaseTicket
from metering.money import NANOS_PER_USD
from metering.periods import rfc3339
from metering.pricing import TokenUsage
from metering.transport.client import STORE_ERRORS
from metering.usage import UsageRecord, clip
from ratelimit.store import Hold

log = logging.getLogger("gateway.exchange")


@dataclass(slots=True)
class Exchange:
    metering: Metering
    clock: Clock
    model: ResolvedModel
    account_id: str
    key_hash: str
    generation_id: str
    streamed: bool
    prompt_estimate: int  # the bound admission reserved for
    images: int = 0  # input images: the gateway counts them, providers do not report them
    prompt_likely: int = 0  # the likely count (metering.estimate), for a hung-up stream
    started: float = field(default_factory=time.monotonic)
    provider_name: str = ""
    usage: TokenUsage | None = None
    usage_source: str = "none"
    status: int = 200
    cancelled: bool = False
    finish_reason: str | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    journal: "SettlementJournal | None" = None
    lease: LeaseTicket | None = None  # admitted from this process's lease on the account
    holds: tuple[Hold, ...] = ()  # of rate limits: places in flight, token reserves
    settling: "Settling | None" = None
    sent_at: float | None = None  # the request left for the provider (the last try of several)
    first_byte_at: float | None = None
    done_at: float | None = None
    upstream_deadline: float | None = None  # event-loop time: the provider's whole answer by then
    _handed_off: "asyncio.Future[None] | None" = None
    _renewal: "asyncio.TimerHandle | None" = None
    _renewing: "asyncio.Future[None] | None" = None

    cost: int = 0  # nanodollars, set with the usage by charge()
    insured: bool = False  # zero completion insurance waived the cost (see insure())
    generates: bool = True  # False for embeddings: no output, no completion to insure
    failed_attempts: tuple[dict[str, Any], ...] = ()  # see forward/route.py
    # For the record as sent (record() keeps strings only, clipped): the provider's own id of
    # its answer (set by the relay), the request's `user` and its `HTTP-Referer` header.
    upstream_id: str | None = None
    external_user: str | None = None
    origin: str | None = None
    native_finish_reason: str | None = None  # the provider's, where it words it otherwise

    def charge(self, usage: TokenUsage, source: str) -> None:
        """`source`: "provider" (its usage), "estimated" (ours), "none" (nothing came: free)."""
        if source != "none" and usage.images != self.images:
            usage = replace(usage, images=self.images)  # the prompt's images were read
        self.usage = usage
        self.usage_source = source
        self.cost = self.model.prices.cost_nanos(usage)

    def insure(self) -> None:
        """Zero completion insurance, as OpenRouter has it: an answer with no completion tokens
        and no finish reason, or one that ended in an error (the provider's error chunk, or the
        stream broken off), costs nothing, prompt included. A client that hung up is charged
        what was generated: its finish reason is "cancelled", and it is never insured."""
        if self.cancelled or not self.cost or not self.generates:
            return
        reason = (self.finish_reason or "").strip()
        completion = self.usage.completion if self.usage is not None else 0
        if reason == "error" or (not reason and completion == 0):
            self.cost = 0
            self.insured = True

    def record(self) -> UsageRecord:
        done = self.done_at or time.monotonic()
        first = self.first_byte_at or done
        usage = self.usage or TokenUsage()
        wall = self.clock.now()
        return UsageRecord(
            id=self.generation_id,
            account_id=self.account_id,
            key_hash=self.key_hash,
            model=self.model.id,
            provider_name=self.provider_name,
            upstream_model=self.model.config.upstream_name,
            tokens_prompt=usage.prompt,
            tokens_completion=usage.completion,
            native_tokens_cached=usage.cached,
            native_tokens_reasoning=usage.reasoning,
            cost=self.cost,
            latency_ms=round((first - self.started) * 1000),
            generation_time_ms=round((done - first) * 1000),
            streamed=self.streamed,
            cancelled=self.cancelled,
            finish_reason=self.finish_reason,
            status=self.status,
            usage_source=self.usage_source,
            created_at=rfc3339(wall),
            created_at_ms=int(wall * 1000),
            num_media_prompt=usage.images,
            zero_completion_insurance=self.insured,
            failed_attempts=self.failed_attempts,
            upstream_id=clip(self.upstream_id),
            external_user=clip(self.external_user),
            origin=clip(self.origin),
            native_finish_reason=clip(self.native_finish_reason),
            cache_discount=None if self.insured else self.model.prices.cache_discount_nanos(usage),
        )

    def hold_reservation(self, every: float) -> None:
        """Renew the reservation every `every` seconds until the settlement: a request still
        being answered (a long stream, a slow answer) must not lose it as if its gateway had
        died, or requests racing it could spend the same credit."""
        self._renewal = asyncio.get_running_loop().call_later(every, self._renew_due, every)

    def _renew_due(self, every: float) -> None:
        if self._handed_off is not None:
            return
        if self._renewing is None or self._renewing.done():
            self._renewing = asyncio.ensure_future(self.renew_reservation())
        self.hold_reservation(every)

    async def renew_reservation(self) -> None:
        in_flight = [hold.key for hold in self.holds if hold.in_flight]
        try:
            await self.metering.renew(
                self.account_id, self.generation_id, self.clock.now(), in_flight
            )
        except STORE_ERRORS as exc:
            log.warning(
                "could not renew the reservation of %s: %s", self.generation_id, type(exc).__name__
            )

    async def settle(self) -> None:
        """Settle once (a cancelled handler still gets its charge written). Returns once the
        settlement is handed off: in the kernel's buffer of a Redis connection that has answered
        before, or done (applied or journaled); Redis's reply is then taken by a callback (see
        gateway/proxy/settle/settling.py), with no task of its own."""
        if self._handed_off is None:
            if self._renewal is not None:
                self._renewal.cancel()
            self.done_at = self.done_at or time.monotonic()
            self.insure()
            self._handed_off = asyncio.get_running_loop().create_future()
            self._send_settlement(self._handed_off)
        if not self._handed_off.done():
            await self._handed_off  # a cancelled wait cancels only this future, not the settlement

    def _keep_for_later(self, record: UsageRecord, reason: str) -> None:
        """Redis is away: journal the settlement, to be replayed once it answers. Only if even
        that fails is the charge lost, and then loudly."""
        if self.lease is not None:
            self.metering.unsettled(record, self.lease)
        if self.journal is not None:
            try:
                self.journal.append(record, self.clock.now(), self._held(record))
                return
            except OSError as exc:
                reason = f"{reason}, and the journal failed: {exc.strerror}"
        log.error(
            "settlement of %s (%d nanodollars) is lost: redis %s", record.id, record.cost, reason
        )

    def _held(self, record: UsageRecord) -> list[Held]:
        """What the request gives back of the rate limits: its places in flight, and its token
        reserves trued up to what it used."""
        return [h.give_back(record.tokens_prompt, record.tokens_completion) for h in self.holds]

    def _failed_unexpectedly(self, record: UsageRecord, exc: BaseException) -> None:
        log.error("settlement of %s failed unexpectedly; journaled", record.id, exc_info=exc)
        self._keep_for_later(record, "failed unexpectedly")

    def _send_settlement(self, handed_off: "asyncio.Future[None]") -> None:
        try:
            record = self.record()
        except Exception:  # a bug: nothing to journal, but the handler must not wait forever
            handed_off.set_result(None)
            log.exception("settlement of %s could not be built; not charged", self.generation_id)
            if self.lease is not None:
                self.lease.close()  # its lease stops covering it
            return
        started = time.perf_counter()
        try:
            reply = self.metering.send_settlement(
                record, self.clock.now(), sent=handed_off, lease=self.lease, held=self._held(record)
            )
        except STORE_ERRORS as exc:  # the batcher is closing
            REDIS_ERRORS.labels("settle").inc()
            self._keep_for_later(record, type(exc).__name__)
            handed_off.set_result(None)
            return
        except Exception as exc:  # a bug: journaled, and the handler must not wait forever
            self._failed_unexpectedly(record, exc)
            handed_off.set_result(None)
            return
        reply.add_done_callback(partial(self._settled, record, started, handed_off))
        if self.settling is not None:
            self.settling.add(reply)

    def _settled(
        self,
        record: UsageRecord,
        started: float,
        handed_off: "asyncio.Future[None]",
        reply: "asyncio.Future[Any]",
    ) -> None:
        if not handed_off.done():
            handed_off.set_result(None)
        if reply.cancelled():
            # The gateway is closing with the reply still out: the journal keeps the charge (a
            # replay of a settlement Redis did apply changes nothing).
            self._keep_for_later(record, "was cut off by shutdown")
            return
        exc = reply.exception()
        if isinstance(exc, STORE_ERRORS):
            REDIS_ERRORS.labels("settle").inc()
            self._keep_for_later(record, type(exc).__name__)
            return
        try:
            if exc is not None:
                raise exc
            result = self.metering.settled(record, reply.result(), self.clock.now(), self.lease)
        except Exception as failure:
            self._failed_unexpectedly(record, failure)
            return
        if SWITCH.on:
            labelled(REDIS_SECONDS, "settle").observe(time.perf_counter() - started)
            if result.applied:
                _count_usage(record)
        if not result.applied:
            log.warning("generation %s was already settled; not charged twice", record.id)


def _count_usage(record: UsageRecord) -> None:
    labels = (record.model, record.provider_name)
    for kind, count in (
        ("prompt", record.tokens_prompt),
        ("completion", record.tokens_completion),
        ("cached", record.native_tokens_cached),
        ("reasoning", record.native_tokens_reasoning),
    ):
        if count:
            labelled(TOKENS, *labels, kind).inc(count)
    if record.cost:
        labelled(SPEND, *labels).inc(record.cost / NANOS_PER_USD)
    if record.zero_completion_insurance:
        labelled(INSURED, *labels).inc()
