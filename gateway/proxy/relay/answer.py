"""The answer that is not a stream: the provider's JSON read whole (within MAX_ANSWER_BYTES and
the answer's deadline), charged by its usage (or estimated from its text when it reports none),
settled, and sent on with `cost` in its usage and every secret taken out."""

import time

import orjson
from aiohttp import web

from gateway.http.errors import ApiError
from gateway.proxy.apis.adapter import ApiAdapter
from gateway.proxy.forward.provider_connection import ProviderResponse, UpstreamBroken
from gateway.proxy.forward.provider_errors import MAX_ANSWER_BYTES, AnswerTooLarge
from gateway.proxy.forward.upstream import Upstream
from gateway.proxy.settle.exchange import Exchange
from metering.pricing import TokenUsage


async def relay_answer(
    upstream: ProviderResponse, exchange: Exchange, caller: Upstream, api: ApiAdapter
) -> web.Response:
    """The answer read, charged by the API's reading of it (`api`), settled and dressed."""
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
    tokens = api.answer_usage(data)
    if tokens is None:
        tokens = TokenUsage(prompt=exchange.prompt_estimate, completion=api.estimate_output(data))
        exchange.charge(tokens, "estimated")
    else:
        exchange.charge(tokens, "provider")
    exchange.finish_reason = api.finish_reason(data)
    exchange.native_finish_reason = api.native_finish_reason(data)
    exchange.upstream_id = data.get("id")  # the provider's own, before it becomes ours
    await exchange.settle()
    api.dress(data, exchange, tokens)
    return web.Response(  # the provider's answer, re-encoded, with every secret taken out
        body=caller.redactor.bytes(orjson.dumps(data)),
        content_type="application/json",
        headers={**exchange.response_headers, "X-Generation-Id": exchange.generation_id},
    )
