"""Admission of one completion request: the worst case to reserve, the limits it counts against,
and the one admission script call; a refusal becomes the 401, 402 or 429 that explains itself."""

import asyncio
import logging
import time
from dataclasses import dataclass, field

from aiohttp import web

from gateway.http.errors import ApiError
from gateway.limits import LIMITS
from gateway.models import ResolvedModel
from gateway.observability.metrics import (
    LEASED,
    PAYMENT_REQUIRED,
    REDIS_ERRORS,
    REDIS_SECONDS,
    SWITCH,
    labelled,
)
from gateway.proxy.limit_answer import limit_headers
from gateway.proxy.request_body import CompletionRequest
from gateway.proxy.settle.journal import JOURNAL, SettlementJournal
from gateway.state import CLOCK, SERVICES, SETTINGS
from metering.admission import AdmissionResult, Metering, Refusal
from metering.estimate import PromptEstimate
from metering.leasing.lease import LeaseTicket
from metering.money import MAX_NANOS, format_usd
from metering.transport.batch_calls import NotSent
from metering.transport.client import STORE_ERRORS
from metering.usage import new_generation_id
from ratelimit.policy import CompiledLimit
from ratelimit.store import Hold, Tokens, admission_inputs

log = logging.getLogger("gateway.admission")


@dataclass(frozen=True, slots=True)
class Admitted:
    generation_id: str
    reserve: int
    headers: dict[str, str] = field(default_factory=dict)  # rate-limit headers for the answer
    lease: LeaseTicket | None = None  # admitted from this process's lease on the account
    holds: tuple[Hold, ...] = ()  # places in flight and token reserves, given back at settlement


async def admit(
    request: web.Request,
    account_id: str,
    key_hash: str,
    route: tuple[ResolvedModel, ...],
    req: CompletionRequest,
    prompt: PromptEstimate,
) -> Admitted:
    """Admit the request for whichever of `route` may serve it: the costliest one's worst case
    is reserved, and it counts against the limits of every model that may serve it (a free
    fallback counts against the free-model limits: it may be what answers)."""
    services = request.app[SERVICES]
    now = request.app[CLOCK].now()
    model, reserve = _costliest(route, req, prompt)
    all_free = route[0].is_free if len(route) == 1 else all(m.is_free for m in route)
    if reserve > MAX_NANOS:
        raise ApiError(402, "this request's worst-case cost is too large; lower max_tokens")
    generation_id = new_generation_id(account_id)
    limits = _limits_of(request, route)
    worst = _worst_tokens(route, req, prompt) if limits else Tokens()
    timeout = request.app[SETTINGS].reservation_timeout_seconds
    inputs = admission_inputs(account_id, key_hash, limits, now, worst, timeout)
    started = time.perf_counter()
    try:
        result = await services.metering.admit(
            account_id,
            key_hash,
            generation_id,
            reserve,
            paid=not all_free,
            now=now,
            limit_keys=inputs.keys,
            limit_args=inputs.args,
            limit_counters=inputs.counters,
            limit_takes=inputs.takes,
            leasable=not any(h.in_flight for h in inputs.holds),  # a place is held in Redis
        )
    except STORE_ERRORS as exc:
        REDIS_ERRORS.labels("admit").inc()
        in_flight = [h.key for h in inputs.holds if h.in_flight]
        if (reserve or inputs.holds) and not isinstance(exc, NotSent):  # it may have run
            journal = request.app[JOURNAL]
            _give_back(journal, services.metering, account_id, generation_id, now, in_flight)
        if all_free and request.app[SETTINGS].admit_free_models_without_redis:
            log.warning("redis unavailable (%s): free model admitted unchecked", type(exc).__name__)
            return Admitted(generation_id, 0)
        raise
    if SWITCH.on:
        if result.lease is not None:
            LEASED.inc()
        else:
            labelled(REDIS_SECONDS, "admit").observe(time.perf_counter() - started)
    headers = limit_headers(result, limits, inputs, (account_id, key_hash), now, worst, req)
    if not result.admitted:
        error = _refusal_error(result, model, reserve, prompt, req.completions)
        if error.status == 402:
            PAYMENT_REQUIRED.labels(str(error.metadata.get("reason", "other"))).inc()
        raise error
    return Admitted(generation_id, reserve, headers, result.lease, inputs.holds)


def _worst_tokens(
    route: tuple[ResolvedModel, ...], req: CompletionRequest, prompt: PromptEstimate
) -> Tokens:
    """The tokens the request may use at most on whichever candidate serves it: the prompt's
    bound and every completion's output limit, as the balance check bounds them."""
    cap = max(model.config.max_output_tokens for model in route)
    return Tokens(prompt.tokens, req.output_limit(cap) * req.completions)


def _costliest(
    route: tuple[ResolvedModel, ...], req: CompletionRequest, prompt: PromptEstimate
) -> tuple[ResolvedModel, int]:
    """The candidate whose worst case is the largest, and that worst case (0 when all are
    free)."""
    if len(route) == 1:  # the common case, without the loop (it is on every request)
        model = route[0]
        if model.is_free:
            return model, 0
        max_out = req.output_limit(model.config.max_output_tokens) * req.completions
        return model, model.prices.worst_case_nanos(prompt.tokens, max_out, prompt.images)
    costliest, worst = route[0], 0
    for model in route:
        if model.is_free:
            continue
        max_out = req.output_limit(model.config.max_output_tokens) * req.completions
        cost = model.prices.worst_case_nanos(prompt.tokens, max_out, prompt.images)
        if cost > worst:
            costliest, worst = model, cost
    return costliest, worst


def _limits_of(request: web.Request, route: tuple[ResolvedModel, ...]) -> tuple[CompiledLimit, ...]:
    policy = request.app[LIMITS].policy
    if len(route) == 1:
        model = route[0]
        return policy.applicable(model.id, model.providers[0].name, model.is_free)
    found: dict[str, CompiledLimit] = {}
    for model in route:
        for limit in policy.applicable(model.id, model.providers[0].name, model.is_free):
            found.setdefault(limit.limit.name, limit)
    return tuple(found.values())


_RELEASES: set["asyncio.Task[None]"] = set()
MAX_RELEASES_AT_ONCE = 1000


def _give_back(
    journal: SettlementJournal,
    metering: Metering,
    account_id: str,
    generation_id: str,
    now: float,
    in_flight: list[str],
) -> None:
    """The request was answered 503 and will never settle, but its admission may have run (and
    Redis may have kept it, even across a crash): what it may hold goes back at once, or, when
    Redis cannot take the release now, from the journal once it answers again (within
    `journal_replay_seconds`), exactly once (the release is idempotent). Its places in flight
    go back with it."""
    if len(_RELEASES) >= MAX_RELEASES_AT_ONCE:  # Redis is away: no use piling up attempts
        _journal_release(journal, account_id, generation_id, in_flight)
        return
    release = _release(journal, metering, account_id, generation_id, now, in_flight)
    task = asyncio.ensure_future(release)
    _RELEASES.add(task)
    task.add_done_callback(_RELEASES.discard)


async def _release(
    journal: SettlementJournal,
    metering: Metering,
    account_id: str,
    generation_id: str,
    now: float,
    in_flight: list[str],
) -> None:
    try:
        await metering.release(account_id, generation_id, now, in_flight)
    except asyncio.CancelledError:
        _journal_release(journal, account_id, generation_id, in_flight)
        raise
    except STORE_ERRORS:
        _journal_release(journal, account_id, generation_id, in_flight)


def _journal_release(
    journal: SettlementJournal, account_id: str, generation_id: str, in_flight: list[str]
) -> None:
    try:
        journal.append_release(account_id, generation_id, in_flight)
    except OSError as exc:
        log.error(
            "the reservation of %s could not be journaled (%s): it is released once "
            "reservation_timeout_seconds have passed",
            generation_id,
            exc.strerror,
        )


def _refusal_error(
    admission: AdmissionResult,
    model: ResolvedModel,
    reserve: int,
    prompt: PromptEstimate,
    completions: int,
) -> ApiError:
    refusal = admission.refusal
    if refusal in (Refusal.NO_KEY, Refusal.NO_ACCOUNT):
        return ApiError(401, "invalid API key", "invalid_api_key")
    if refusal is Refusal.DISABLED:
        return ApiError(401, "this API key is disabled", "invalid_api_key")
    if refusal is Refusal.EXPIRED:
        return ApiError(401, "this API key has expired", "invalid_api_key")
    if refusal is Refusal.MANAGEMENT_KEY:
        return ApiError(403, "a management key manages keys; it cannot call models", "forbidden")
    if refusal is Refusal.NEGATIVE_BALANCE:
        return ApiError(
            402,
            f"your balance is negative (${format_usd(admission.balance)}); add credits to "
            "continue, free models included",
            "payment_required",
            reason="negative_balance",
            balance=format_usd(admission.balance),
        )
    if refusal is Refusal.KEY_LIMIT:
        left = max(admission.key_left, 0)
        return ApiError(
            402,
            f"This request may cost up to ${format_usd(reserve)}, more than this key's credit "
            f"limit leaves (${format_usd(left)}); raise the key's limit, wait for it to reset, "
            f"or ask for fewer max_tokens (you can afford "
            f"{model.prices.affordable_output(left, prompt.tokens, completions, prompt.images)}).",
            "payment_required",
            reason="key_limit",
            limit_remaining=format_usd(left),
        )
    available = max(admission.available, 0)
    affordable = model.prices.affordable_output(
        available, prompt.tokens, completions, prompt.images
    )
    return ApiError(
        402,
        f"This request requires more credits, or fewer max_tokens. It may cost up to "
        f"${format_usd(reserve)} and you can spend ${format_usd(available)} now "
        f"(balance less what requests in flight have reserved); you can afford "
        f"{affordable} max_tokens.",
        "payment_required",
        reason="insufficient_credits",
        required=format_usd(reserve),
        available=format_usd(available),
        affordable_max_tokens=affordable,
    )
