"""The answer that is not a stream: the provider's JSON read whole (within MAX_ANSWER_BYTES and
the answer's deadline), charged by its usage (or estimated from its text when it reports none),
settled, and sent on with `cost` in its usage and every secret taken out."""

import time
from typing import Any

import orjson
from aiohttp import web

from gateway.http.errors import ApiError
from gateway.proxy.forward.provider_connection import ProviderResponse, UpstreamBroken
from gateway.proxy.forward.provider_errors import MAX_ANSWER_BYTES, AnswerTooLarge
from gateway.proxy.forward.upstream import Upstream
from gateway.proxy.relay.provider_usage import parse_usage, usage_with_cost
from gateway.proxy.settle.exchange import Exchange
from metering.pricing import TokenUsage


async def relay_answer(
    upstream: ProviderResponse, exchange: Exchange, caller: Upstream
) -> web.Response:
    try:
        raw = await caller.read(upstream, MAX_ANSWER_BYTES)
    except TimeoutError as exc:
        raise ApiError(
            408,
            f"provider {exchange.provider_name} did not finish its answer in time",
            "timeout",
            provider_name=exchange.provider_name,
        ) from exc
    except (UpstreamBroken, AnswerTooLarge) as exc:
        raise ApiError(
            502,
            f"provider {exchange.provider_name} broke off its answer",
            "provider_error",
            provider_name=exchange.provider_name,
        ) from exc
    finally:
        upstream.release()
    exchange.done_at = time.monotonic()
    try:
        data = orjson.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not an object")
    except (orjson.JSONDecodeError, ValueError):
        raise ApiError(
            502,
            f"provider {exchange.provider_name} sent an invalid response",
            "provider_error",
            provider_name=exchange.provider_name,
        ) from None
    tokens = parse_usage(data.get("usage"), output=exchange.generates)
    if tokens is None:
        tokens = TokenUsage(prompt=exchange.prompt_estimate, completion=_estimate_output(data))
        exchange.charge(tokens, "estimated")
    else:
        exchange.charge(tokens, "provider")
    exchange.finish_reason = _finish_reason(data)
    await exchange.settle()
    data["id"] = exchange.generation_id
    data["model"] = exchange.model.id  # the model that served (a fallback, perhaps)
    data["provider"] = exchange.provider_name
    data["usage"] = usage_with_cost(
        data.get("usage"), tokens, exchange.cost, output=exchange.generates
    )
    return web.Response(  # the provider's answer, re-encoded, with every secret taken out
        body=caller.redactor.bytes(orjson.dumps(data)),
        content_type="application/json",
        headers={**exchange.response_headers, "X-Generation-Id": exchange.generation_id},
    )


def _finish_reason(data: dict[str, Any]) -> str | None:
    choices = data.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        reason = choices[0].get("finish_reason")
        return reason if isinstance(reason, str) else None
    return None


def _estimate_output(data: dict[str, Any]) -> int:
    """Tokens of the returned text when the provider reported none: about four bytes a token."""
    total = 0
    for choice in data.get("choices") or []:
        if isinstance(choice, dict):
            message = choice.get("message") or {}
            text = message.get("content") if isinstance(message, dict) else None
            text = text if isinstance(text, str) else choice.get("text")
            if isinstance(text, str):
                total += -(-len(text.encode()) // 4)
    return total
