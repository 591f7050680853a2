"""What the metrics and the access line record of one completion request, whatever way it ends
(counted and logged once the answer is on its way: see gateway.middleware)."""

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from aiohttp import web

from gateway.observability.metrics import (
    ACCESS_FIELDS,
    OVERHEAD_SECONDS,
    REQUEST_SECONDS,
    REQUESTS,
    SWITCH,
    TTFT_SECONDS,
    UPSTREAM_SECONDS,
    labelled,
)
from gateway.proxy.settle.exchange import Exchange
from metering.money import format_usd


@dataclass(slots=True)
class Outcome:
    """What the metrics record of one completion request, whatever way it ends."""

    model: str = "none"
    provider: str = "none"
    status: int = 200
    error_type: str = "none"
    exchange: Exchange | None = None


def record_when_answered(request: web.Request, outcome: Outcome, received: float) -> None:
    """Leave the request's metrics and access fields for the middleware to take once the answer
    is on its way."""
    observed: Callable[[], dict[str, object]] = partial(
        _observed, outcome, received, time.monotonic()
    )
    request[ACCESS_FIELDS] = observed


def _observed(outcome: Outcome, received: float, ended: float) -> dict[str, object]:
    """The request's metrics, and the fields it adds to its access line."""
    exchange = outcome.exchange
    if exchange is not None and exchange.provider_name:
        outcome.model, outcome.provider = exchange.model.id, exchange.provider_name
    upstream = None
    if exchange is not None and exchange.sent_at is not None:
        upstream = (exchange.done_at or ended) - exchange.sent_at
    if SWITCH.on:
        _observe(outcome, received, ended, upstream)
    return _access_fields(outcome, upstream)


def _observe(outcome: Outcome, received: float, ended: float, upstream: float | None) -> None:
    labelled(
        REQUESTS, outcome.model, outcome.provider, f"{outcome.status // 100}xx", outcome.error_type
    ).inc()
    total = ended - received
    REQUEST_SECONDS.observe(total)
    if upstream is None:
        return
    exchange = outcome.exchange
    labelled(UPSTREAM_SECONDS, outcome.provider).observe(upstream)
    OVERHEAD_SECONDS.observe(max(total - upstream, 0.0))
    if exchange is not None and exchange.streamed and exchange.first_byte_at is not None:
        labelled(TTFT_SECONDS, outcome.provider).observe(exchange.first_byte_at - received)


def _access_fields(outcome: Outcome, upstream: float | None) -> dict[str, object]:
    fields: dict[str, object] = {
        "model": outcome.model,
        "provider": outcome.provider,
        "error_type": outcome.error_type,
    }
    exchange = outcome.exchange
    if exchange is not None:
        usage = exchange.usage
        fields.update(
            {
                "generation_id": exchange.generation_id,
                "account_id": exchange.account_id,
                "key": exchange.key_hash[:12],
                "streamed": exchange.streamed,
                "cancelled": exchange.cancelled,
                "prompt_tokens": usage.prompt if usage else 0,
                "completion_tokens": usage.completion if usage else 0,
                "cost_usd": format_usd(exchange.cost),
            }
        )
        if upstream is not None:
            fields["upstream_ms"] = round(upstream * 1000, 3)
    return fields
