"""The rate-limit side of an admission's answer: the headers of the limits a request was counted
against, and the 429 that explains itself (for a token limit, with the `max_tokens` that would
fit), with the decision counted in the metrics."""

import logging

from gateway.http.errors import ApiError
from gateway.observability.metrics import RATELIMIT_DECISIONS, SWITCH, labelled
from gateway.proxy.request_body import CompletionRequest
from metering.admission import AdmissionResult, Refusal
from ratelimit.decision import Decision, LimitState, decide
from ratelimit.policy import CompiledLimit
from ratelimit.store import ScriptInputs, Tokens

log = logging.getLogger("gateway.admission")


def limit_headers(
    result: AdmissionResult,
    limits: tuple[CompiledLimit, ...],
    inputs: ScriptInputs,
    partition: tuple[str, str],
    now: float,
    worst: Tokens,
    req: CompletionRequest,
) -> dict[str, str]:
    """The rate-limit headers of the limits the request was counted against; the 429 that
    explains itself when one refused it."""
    counted = result.admitted or result.refusal is Refusal.RATE_LIMITED
    if not (limits and result.limit_counts and counted):
        return {}
    counts, refusing = list(result.limit_counts), result.limit_refused
    decision = decide(limits, counts, refusing, now, inputs.takes, partition)
    if SWITCH.on:
        _record(decision, partition[0])
    headers = decision.headers()
    refused = decision.refused
    if result.refusal is Refusal.RATE_LIMITED:
        fits = _room_for_output(refused, worst, req) if refused else None
        advice = _max_tokens_advice(refused, fits, req) if refused else ""
        raise ApiError(
            429,
            decision.message(result.purchased, advice),
            "rate_limit_exceeded",
            headers=headers,
            limit=refused.limit.name if refused else None,
            **_token_figures(refused, fits),
        )
    return headers


def _room_for_output(state: LimitState, worst: Tokens, req: CompletionRequest) -> int | None:
    """The largest max_tokens this token limit would take now, where lowering max_tokens is
    what would help (a limit on completion or total tokens that the prompt leaves room in)."""
    if state.limit.kind != "tokens" or state.limit.token_count == "prompt" or not req.generates:
        return None
    room = state.allowed if state.never_fits else state.allowed - state.count
    if state.limit.token_count == "total":
        room -= worst.prompt
    fits = room // max(req.completions, 1)
    return fits if fits >= 1 else None


def _max_tokens_advice(state: LimitState, fits: int | None, req: CompletionRequest) -> str:
    if fits is None:
        return ""
    field = "max_output_tokens" if req.kind == "responses" else "max_tokens"  # the API's name
    return f"with {field} of {fits} or less it fits{'' if state.never_fits else ' now'}"


def _token_figures(state: LimitState | None, fits: int | None) -> dict[str, int]:
    """A token limit's 429 metadata: what the request may use, what is left, what would fit."""
    if state is None or state.limit.kind != "tokens":
        return {}
    figures = {"tokens_requested": state.take, "tokens_remaining": state.remaining}
    if fits is not None:
        figures["max_tokens_that_fits"] = fits
    return figures


def _record(decision: Decision, account_id: str) -> None:
    """One decision per limit the request was counted against (a refused one counts nowhere)."""
    states = (decision.refused,) if decision.refused is not None else decision.states
    for state in states:
        outcome = decision.outcome(state)
        labelled(RATELIMIT_DECISIONS, state.limit.name, outcome).inc()
        if outcome == "shadow_limited":
            log.info(
                "shadow limit %s exceeded by account %s: %d of %d",
                state.limit.name,
                account_id,
                state.count,
                state.allowed,
            )
