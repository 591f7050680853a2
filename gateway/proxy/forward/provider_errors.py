"""A provider's refusal, passed on in our error shape, and answers read within a size cap.

A provider's 400-class answer about the request itself (bad request, context too long, content
policy) reaches the client with its status. What is the operator's business, not the client's, is
a 502: the provider refusing the gateway's credentials (401, 403, 407), its own account out of
money (402), an unknown upstream model (404), and any 5xx; a provider's 429 (the gateway is rate
limited upstream) is a 503 with a Retry-After.
"""

from collections.abc import Awaitable, Callable

import orjson

from gateway.http.errors import ApiError
from gateway.proxy.forward.provider_connection import ProviderResponse, UpstreamBroken

MAX_ERROR_BYTES = 64 * 1024
MAX_ANSWER_BYTES = 32 * 1024 * 1024
_OPERATORS_PROBLEM = {401, 402, 403, 404, 407}


class AnswerTooLarge(Exception):
    pass


async def read_capped(response: ProviderResponse, cap: int) -> bytes:
    """The whole body, or AnswerTooLarge past `cap` bytes (a provider cannot exhaust memory)."""
    parts: list[bytes] = []
    size = 0
    while True:
        piece = await response.readany()
        if not piece:
            return b"".join(parts)
        size += len(piece)
        if size > cap:
            raise AnswerTooLarge(f"answer over {cap} bytes")
        parts.append(piece)


async def raise_provider_error(
    response: ProviderResponse,
    provider: str,
    redact: Callable[[str], str],
    read: Callable[[ProviderResponse, int], Awaitable[bytes]],
) -> None:
    """Raise the provider's refusal as ours; `redact(text)` takes every secret out of its
    message, should the provider quote back what it was sent; `read(response, cap)`
    reads it within the answer's deadline."""
    try:
        raw = await read(response, MAX_ERROR_BYTES)
    except (UpstreamBroken, TimeoutError, AnswerTooLarge):
        raw = b""
    finally:
        response.release()
    upstream = response.status
    message = f"provider {provider} answered {upstream}"
    try:
        detail = orjson.loads(raw)
        inner = detail.get("error") if isinstance(detail, dict) else None
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            message = f"{message}: {redact(inner['message'])[:2000]}"
    except orjson.JSONDecodeError:
        pass
    headers: dict[str, str] = {}
    if upstream == 429:
        status, message = 503, f"provider {provider} is busy (rate limited); try again shortly"
        headers["Retry-After"] = (response.headers.get("Retry-After") or "1")[:16]
    elif upstream in _OPERATORS_PROBLEM:
        status, message = 502, f"provider {provider} cannot serve this model now ({upstream})"
    elif 400 <= upstream < 500:
        status = upstream
    else:
        status = 502
    raise ApiError(
        status,
        message,
        "provider_error",
        headers=headers,
        provider_name=provider,
        provider_status=upstream,
    )
