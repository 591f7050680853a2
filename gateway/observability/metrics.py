"""Prometheus metrics (prefix `gateway_`, base units). Labels come from the catalog, the route
table and fixed lists only: never an account, a key or anything a client can make unbounded.

With `serve --workers N` every worker writes its samples to files in one directory
(prometheus-client's multiprocess mode, switched on by PROMETHEUS_MULTIPROC_DIR before this module
is imported), and `/metrics` adds them up, so one scrape reads the sum over all workers.
"""

import os
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from gateway import __version__
from gateway.http.auth import admin_token_matches
from gateway.http.describe import METRICS, described, errors, op, text
from gateway.http.errors import ApiError
from gateway.observability.logs import access
from gateway.state import SETTINGS
from metering.accounts import Purchase
from metering.ids import random_hex
from metering.money import NANOS_PER_USD

# Fine enough to read a 1 ms overhead, wide enough for a long generation.
SECONDS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
)

_CHILDREN: dict[tuple[int, tuple[str, ...]], Any] = {}


def labelled(metric: Any, *values: str) -> Any:
    """`metric.labels(*values)`, remembered: labels come from the catalog and fixed lists, so
    the children are few, and prometheus-client's own lookup costs several µs a call."""
    key = (id(metric), values)
    child = _CHILDREN.get(key)
    if child is None:
        child = _CHILDREN[key] = metric.labels(*values)
    return child


BUILD = Gauge(
    "gateway_build_info", "The running version (value 1)", ["version"], multiprocess_mode="max"
)
BUILD.labels(__version__).set(1)
HTTP_REQUESTS = Counter(
    "gateway_http_requests_total", "HTTP requests answered", ["route", "status_class"]
)
HTTP_DURATION = Histogram(
    "gateway_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["route"],
    buckets=SECONDS,
)
REQUESTS = Counter(
    "gateway_requests_total",
    "Completion requests by outcome",
    ["model", "provider", "status_class", "error_type"],
)
INFLIGHT = Gauge(
    "gateway_inflight_requests", "Completion requests being served", multiprocess_mode="livesum"
)
OPEN_STREAMS = Gauge("gateway_open_streams", "Streams being relayed", multiprocess_mode="livesum")
REQUEST_SECONDS = Histogram(
    "gateway_request_duration_seconds",
    "Whole completion requests, received to answered",
    buckets=SECONDS,
)
UPSTREAM_SECONDS = Histogram(
    "gateway_upstream_duration_seconds",
    "Provider time: request sent to last byte",
    ["provider"],
    buckets=SECONDS,
)
OVERHEAD_SECONDS = Histogram(
    "gateway_overhead_seconds",
    "The gateway's own time: whole request less the provider's",
    buckets=SECONDS,
)
TTFT_SECONDS = Histogram(
    "gateway_time_to_first_token_seconds",
    "Streams: request received to the provider's first byte",
    ["provider"],
    buckets=SECONDS,
)
TOKENS = Counter("gateway_tokens_total", "Tokens charged", ["model", "provider", "kind"])
SPEND = Counter("gateway_spend_usd_total", "USD charged for usage", ["model", "provider"])
INSURED = Counter(
    "gateway_zero_completion_insured_total",
    "Answers not charged: no completion and no finish reason, or an error finish",
    ["model", "provider"],
)
PURCHASED = Counter("gateway_credits_purchased_usd_total", "Credits bought", ["method"])
FEES = Counter("gateway_fees_usd_total", "Platform fees on purchases", ["method"])
REFUNDS = Counter("gateway_refunds_usd_total", "Credits refunded")
PAYMENT_REQUIRED = Counter("gateway_payment_required_total", "402 answers", ["reason"])
RATELIMIT_DECISIONS = Counter(
    "gateway_ratelimit_decisions_total", "Rate-limit decisions by limit", ["limit", "outcome"]
)
REDIS_SECONDS = Histogram(
    "gateway_redis_duration_seconds", "Redis round trips", ["operation"], buckets=SECONDS
)
LEASED = Counter(
    "gateway_leased_admissions_total",
    "Requests admitted from this process's lease on a busy account, without a round trip",
)
REDIS_ERRORS = Counter("gateway_redis_errors_total", "Failed Redis round trips", ["operation"])
JOURNALED = Gauge(
    "gateway_settlements_journaled",
    "Settlements waiting in the local journal for Redis to come back",
    multiprocess_mode="max",
)
OUTBOX_EVENTS = Gauge(
    "gateway_outbox_events",
    "Auto top-up requests waiting for delivery (as the last pass saw them)",
    multiprocess_mode="max",
)
FALLBACKS = Counter(
    "gateway_fallbacks_total",
    "Provider tries that gave way to the next provider or model, by why",
    ["provider", "reason"],
)
COOLDOWNS = Counter(
    "gateway_provider_cooldowns_total",
    "Providers (for a model) and provider keys set to cool down, by why",
    ["provider", "reason"],
)
UPSTREAM_ERRORS = Counter(
    "gateway_upstream_errors_total", "Provider failures", ["provider", "kind"]
)
PROVIDER_CONNECTIONS = Gauge(
    "gateway_provider_connections",
    "Connections to providers, open (busy or idle) and idle",
    ["provider", "state"],
    multiprocess_mode="livesum",
)
PROVIDER_CONNECTION_WAITS = Counter(
    "gateway_provider_connection_waits_total",
    "Requests that waited for a connection: the provider's max_connections were all busy",
    ["provider", "outcome"],
)


class Switch:
    """`metrics_enabled = false` turns the request path's observations off (for operators who
    scrape nothing, and for `make bench` to measure what metrics cost)."""

    on = True


SWITCH = Switch()


def count_purchase(purchase: Purchase) -> None:
    PURCHASED.labels(purchase.method).inc(purchase.amount / NANOS_PER_USD)
    FEES.labels(purchase.method).inc(purchase.fee / NANOS_PER_USD)


REQUEST_ID = web.RequestKey("request_id", str)
# What a handler adds to its log line, made (with the handler's own metrics) once answered.
ACCESS_FIELDS: web.RequestKey[Callable[[], dict[str, object]]] = web.RequestKey("access_fields")


def request_id_of(request: web.Request) -> str:
    """The caller's X-Request-Id when it is short and plain, else a new one."""
    given = request.headers.get("X-Request-Id", "")
    if 0 < len(given) <= 64 and all(c.isascii() and (c.isalnum() or c in "-_.") for c in given):
        return given
    return random_hex(8)


def observe_request(request: web.Request, request_id: str, status: int, elapsed: float) -> None:
    """Counts and times one answered request, and writes its one access log line. Called in
    the loop's next turn, after the answer was written: none of this delays it."""
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    if SWITCH.on:
        labelled(HTTP_REQUESTS, route, f"{status // 100}xx").inc()
        labelled(HTTP_DURATION, route).observe(elapsed)
    handler_fields = request.get(ACCESS_FIELDS)
    extra = handler_fields() if handler_fields is not None else {}
    if route not in QUIET_ROUTES:
        access(
            {
                "request_id": request_id,
                "method": request.method,
                "route": route,
                "status": status,
                "duration_ms": round(elapsed * 1000, 3),
                **extra,
            }
        )


QUIET_ROUTES = frozenset({"/metrics", "/healthz", "/readyz"})


@described(
    op(
        "Prometheus metrics, summed over workers",
        "operations",
        METRICS,
        {"200": text("text/plain", "Prometheus text format"), **errors(401)},
    )
)
async def metrics_endpoint(request: web.Request) -> web.Response:
    token = request.app[SETTINGS].metrics_token
    secret = token.get_secret_value() if token is not None else ""
    if secret and not admin_token_matches(request, secret):
        raise ApiError(401, "metrics need 'Authorization: Bearer <metrics token>'", "invalid_token")
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        body = generate_latest(registry)
    else:
        body = generate_latest()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
