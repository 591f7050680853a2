"""Forwarding: the provider's copy of the request, and the candidates' providers tried in order.

The request body reaches the provider as the client sent it, less the gateway's routing fields
(gateway.proxy.routing), with the model's upstream name and an output cap within what admission
reserved, as the API's adapter writes it (gateway.proxy.apis: chat's `max_tokens`, or
`max_completion_tokens` when the client used that, and `stream_options.include_usage`;
Responses' `max_output_tokens`; Messages' `max_tokens`).

Before any output, a try gives way:
- to the same provider with its next key, after a 429 or a refusal of the key (401, 403), when
  the provider has another key that is not cooling down;
- to the model's next provider when this one cannot be reached, times out, answers 5xx or 429;
  providers cooling down (gateway.proxy.forward.cooldowns) are tried last;
- to the next model (the request's `models`) after any other refusal, its 4xx included (such as a
  context that is too long);
- when every try of a round failed for a reason worth another (429, 5xx, unreachable: not a
  timeout, not a refusal of the request), to another round over them all, `upstream_retries`
  times at most, RETRY_PAUSE_SECONDS apart.
The last try's answer is the client's. Every try that gave way is in the record
(`failed_attempts`) and counted (`gateway_fallbacks_total`).
"""

import asyncio
import time
from dataclasses import dataclass

from aiohttp import web

from config.catalog import ProviderConfig
from gateway.http.errors import ApiError
from gateway.observability.metrics import FALLBACKS, UPSTREAM_ERRORS
from gateway.proxy.apis.adapter import ApiAdapter
from gateway.proxy.forward.provider_connection import ProviderResponse
from gateway.proxy.forward.provider_errors import raise_provider_error
from gateway.proxy.forward.upstream import Upstream, UpstreamFailure
from gateway.proxy.request_body import CompletionRequest
from gateway.proxy.routing import Candidate, provider_body
from gateway.proxy.settle.exchange import Exchange
from gateway.state import SERVICES, SETTINGS

RETRY_PAUSE_SECONDS = 0.2
KEY_TROUBLE = (401, 403, 429)


@dataclass(frozen=True, slots=True)
class Failure:
    """One try that failed before any output: what it was, and the error the client would get."""

    model: str
    provider: str
    what: int | str  # the provider's HTTP status, or connect, timeout, protocol
    error: ApiError

    @property
    def worth_another_round(self) -> bool:
        if isinstance(self.what, str):
            return self.what != "timeout"
        return self.what == 429 or self.what >= 500

    @property
    def refuses_the_request(self) -> bool:
        """A 4xx about the request itself: the model's other providers would refuse it too."""
        return (
            isinstance(self.what, int) and 400 <= self.what < 500 and self.what not in KEY_TROUBLE
        )


async def forward(
    request: web.Request,
    exchange: Exchange,
    req: CompletionRequest,
    api: ApiAdapter,
    route: tuple[Candidate, ...],
) -> ProviderResponse:
    """The first answer that does not give way (see above). Most requests name one model with
    one provider and one key: they take one try without the loops (with it, routing's cost on
    such a request went from about 4% more CPU to 1-2%, within noise: README, Performance)."""
    upstream = request.app[SERVICES].upstream
    rounds = 1 + request.app[SETTINGS].upstream_retries
    base = provider_body(req.body)
    call = _Call(upstream, exchange, api.upstream_path, api.forward_headers(req))
    if len(route) == 1 and rounds == 1:  # most requests: one model, one provider, one key
        model, providers = route[0]
        if len(providers) == 1 and upstream.key_count(providers[0]) == 1:
            exchange.model = model
            outcome = await call.attempt(api.payload(dict(base), req, model), providers[0])
            if isinstance(outcome, ProviderResponse):
                return outcome
            raise outcome.error
    payloads = [api.payload(dict(base), req, model) for model, _ in route]
    failures: list[Failure] = []
    for round_ in range(rounds):
        started = len(failures)
        for (model, providers), payload in zip(route, payloads, strict=True):
            exchange.model = model
            if not round_:  # first those not cooling down; in a retry round, as listed
                providers = upstream.warm_first(model.id, providers)
            for provider in providers:
                for _ in range(upstream.key_count(provider)):  # keys in turn, while one is
                    outcome = await call.attempt(payload, provider)
                    if isinstance(outcome, ProviderResponse):
                        if failures:
                            _gave_way(exchange, failures)
                        return outcome
                    failures.append(outcome)
                    if outcome.what not in KEY_TROUBLE or upstream.cooling(provider, model.id):
                        break  # the provider's trouble, or no other key to try
                if failures[-1].refuses_the_request:
                    break  # the model's other providers would refuse it too: the next model
        if round_ + 1 == rounds or not all(f.worth_another_round for f in failures[started:]):
            break
        await asyncio.sleep(RETRY_PAUSE_SECONDS)
    _gave_way(exchange, failures[:-1])
    raise failures[-1].error


@dataclass(frozen=True, slots=True)
class _Call:
    """What every try of one request shares: the provider's path and the headers sent on."""

    upstream: Upstream
    exchange: Exchange
    path: str
    headers: bytes

    async def attempt(self, payload: bytes, provider: ProviderConfig) -> ProviderResponse | Failure:
        upstream, exchange = self.upstream, self.exchange
        exchange.provider_name = provider.name
        exchange.sent_at = time.monotonic()
        exchange.upstream_deadline = upstream.deadlines.watch()
        model = exchange.model.id
        key = upstream.next_key(provider)
        try:
            response = await upstream.post(provider, self.path, payload, key, self.headers)
        except UpstreamFailure as exc:
            UPSTREAM_ERRORS.labels(provider.name, exc.kind).inc()
            error = _failed(upstream, exc, provider, model, key)
            return Failure(model, provider.name, exc.kind, error)
        exchange.first_byte_at = time.monotonic()
        if response.status == 200:
            return response
        if response.status >= 500:
            UPSTREAM_ERRORS.labels(provider.name, "status").inc()
        retry_after = response.headers.get("Retry-After")
        upstream.cool_after(provider, model, key, response.status, retry_after)
        try:
            redact = upstream.redactor.text
            await raise_provider_error(response, provider.name, redact, upstream.read)
        except ApiError as exc:
            return Failure(model, provider.name, response.status, exc)
        raise AssertionError("raise_provider_error returned")


def _failed(
    upstream: Upstream, exc: UpstreamFailure, provider: ProviderConfig, model: str, key: int
) -> ApiError:
    """The client's error for a try that reached no answer; the provider cools down for it,
    unless its connections were only all busy (the gateway's own limit, not its trouble)."""
    if exc.kind == "busy":
        return ApiError(
            503,
            str(exc),
            "provider_error",
            headers={"Retry-After": "1"},
            provider_name=provider.name,
        )
    upstream.cool_after(provider, model, key, exc.kind, None)
    status = 408 if exc.kind == "timeout" else 502
    error_type = "timeout" if status == 408 else "provider_error"
    return ApiError(status, str(exc), error_type, provider_name=provider.name)


def _gave_way(exchange: Exchange, failures: list[Failure]) -> None:
    """The tries that gave way to another, into the record and the metrics."""
    for failure in failures:
        attempt = {"model": failure.model, "provider": failure.provider, "status": failure.what}
        exchange.failed_attempts = (*exchange.failed_attempts, attempt)
        FALLBACKS.labels(failure.provider, _reason(failure.what)).inc()


def _reason(what: int | str) -> str:
    """A bounded label: connect, timeout or protocol; 429, 4xx or 5xx."""
    if isinstance(what, str):
        return what
    return "429" if what == 429 else f"{what // 100}xx"
