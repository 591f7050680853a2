"""Every error the gateway sends has one shape:
`{"error": {"code": <status>, "message": "...", "metadata": {"error_type": "..."}}}`.

Handlers raise ApiError; the middleware turns it, aiohttp's own HTTP errors, and anything unexpected
into that body. An unexpected exception is logged with its trace and answered with a plain 500: no
stack trace or internal detail ever reaches a client.

An error a client should not retry soon says so: the official OpenAI and Anthropic SDKs obey
`x-should-retry` before anything else, and some of them honour any `Retry-After` with no cap (the
Node `openai` SDK would sleep until midnight UTC on a free model's daily limit). A 402 (credits,
a key's limit) cannot succeed by waiting, and an answer whose `Retry-After` is more than
RETRY_SOON_SECONDS away should not hold a program for it: both carry `x-should-retry: false`
beside the honest `Retry-After`; one that reopens within that carries `x-should-retry: true`.
"""

import email.utils
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from gateway.state import SETTINGS
from metering.transport.client import STORE_ERRORS

log = logging.getLogger("gateway")
RETRY_SOON_SECONDS = 60

_TYPES_BY_STATUS = {
    400: "bad_request",
    401: "invalid_api_key",
    402: "payment_required",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limit_exceeded",
    502: "provider_error",
    503: "service_unavailable",
}


# The error shape a request's answers take: OpenRouter's (above), or Anthropic's
# `{"type": "error", "error": {"type", "message"}}` on its Messages API (set by the adapter).
ERROR_SHAPE = web.RequestKey("error_shape", str)
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        error_type: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **metadata: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type or _TYPES_BY_STATUS.get(status, "error")
        self.headers = headers or {}
        self.metadata = metadata

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.error_type, **self.metadata)

    def response(self, shape: str = "openrouter") -> web.Response:
        body = anthropic_error(self.status, self.message) if shape == "anthropic" else self.body()
        return json_response(
            body, status=self.status, headers=retry_advice(self.status, self.headers)
        )


def anthropic_error(status: int, message: str) -> dict[str, Any]:
    """An error as Anthropic's API words it (its SDK reads `error.type` and `error.message`)."""
    fallback = "api_error" if status >= 500 else "invalid_request_error"
    return {
        "type": "error",
        "error": {"type": _ANTHROPIC_TYPES.get(status, fallback), "message": message},
    }


def retry_advice(status: int, headers: dict[str, str]) -> dict[str, str]:
    """`headers` with `x-should-retry` where a retry soon could (true) or could not (false)
    succeed; unchanged where that is not known."""
    if status == 402:
        return {**headers, "x-should-retry": "false"}
    if "x-should-retry" in headers:  # the refusal knows (a request no window can take)
        return headers
    wait = _seconds(headers.get("Retry-After"))
    if wait is None:
        return headers
    return {**headers, "x-should-retry": "true" if wait <= RETRY_SOON_SECONDS else "false"}


def _seconds(retry_after: str | None) -> float | None:
    """Retry-After in seconds from now: a number of seconds or an HTTP date (RFC 9110)."""
    if not retry_after:
        return None
    if retry_after.isascii() and retry_after.isdigit():
        return float(retry_after)
    try:
        when = email.utils.parsedate_to_datetime(retry_after)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return when.timestamp() - time.time()


def error_body(status: int, message: str, error_type: str, **metadata: Any) -> dict[str, Any]:
    return {
        "error": {
            "code": status,
            "message": message,
            "metadata": {"error_type": error_type, **metadata},
        }
    }


def json_response(
    data: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def bad_request(message: str, field: str | None = None) -> ApiError:
    error = ApiError(400, message, "bad_request")
    if field:
        error.metadata["field"] = field
    return error


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Exception as exc:
        return error_response(request, exc)


def error_response(request: web.Request, exc: Exception) -> web.StreamResponse:
    """The JSON error answer for what a handler raised; re-raises what is not an error to answer
    (a redirect, a client that went away)."""
    shape = request.get(ERROR_SHAPE, "openrouter")
    if isinstance(exc, ApiError):
        return exc.response(shape)
    if isinstance(exc, STORE_ERRORS):
        log.warning(
            "redis unavailable on %s %s: %s", request.method, request.path, type(exc).__name__
        )
        return ApiError(
            503, "the gateway's store is unavailable; try again shortly", "service_unavailable"
        ).response(shape)
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        limit = request.app[SETTINGS].max_body_bytes
        return ApiError(
            413, f"request body is larger than {limit} bytes", max_bytes=limit
        ).response(shape)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        message = {404: "no such endpoint", 405: f"method {request.method} not allowed here"}.get(
            exc.status, exc.reason
        )
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return ApiError(exc.status, message, headers=headers).response(shape)
    if isinstance(exc, OSError):
        if request.transport is None or request.transport.is_closing():
            raise exc  # the client went away; nothing to answer
        log.error("unexpected I/O error on %s %s", request.method, request.path, exc_info=exc)
        return ApiError(500, "internal error", "internal_error").response(shape)
    log.error("unexpected error on %s %s", request.method, request.path, exc_info=exc)
    return ApiError(500, "internal error", "internal_error").response(shape)
