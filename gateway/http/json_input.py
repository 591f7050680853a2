"""Small, strict readers for JSON request bodies of the admin and key APIs (each problem a 400
naming its field)."""

import asyncio
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web

from gateway.http.errors import ApiError, bad_request
from gateway.state import SETTINGS
from metering.money import AmountError, parse_usd

MAX_ADMIN_BODY = 64 * 1024


async def json_object(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_ADMIN_BODY:
        raise ApiError(413, f"request body is larger than {MAX_ADMIN_BODY} bytes")
    raw = await read_body(request)
    return parse_object(raw) if raw else {}


async def read_body(request: web.Request) -> bytes:
    """The whole body. One that cannot be decoded (broken gzip or chunked framing) is a 400, one
    over the cap a 413, one still arriving after `client_read_timeout` a 408, and a client that
    hung up before sending all of it a 499: the client's doing each time, never a 500 in the
    metrics and the error log."""
    try:
        if request.content.is_eof():  # the usual case: it came with the head, nothing to wait for
            return await request.read()
        limit = request.app[SETTINGS].client_read_timeout
        try:
            async with asyncio.timeout(limit):
                return await request.read()
        except TimeoutError:
            raise ApiError(
                408, f"the request body did not arrive within {limit:g} s", "timeout"
            ) from None
    except web.RequestPayloadError:
        raise bad_request(
            "the request body cannot be read: its Content-Encoding or chunked framing is broken"
        ) from None
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS].max_body_bytes
        raise ApiError(413, f"request body is larger than {limit} bytes", max_bytes=limit) from None
    except ConnectionResetError:
        raise ApiError(
            499, "the client closed the connection before its body arrived", "client_closed"
        ) from None


def parse_object(raw: bytes) -> dict[str, Any]:
    """A JSON object, or a 400 that says what is wrong with the body."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"request body is not valid JSON: {exc.msg}") from None
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object")
    return body


def text_field(
    body: dict[str, Any],
    name: str,
    *,
    required: bool = False,
    max_len: int = 200,
    default: str | None = None,
) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise bad_request(f"'{name}' is required", name)
        return default
    if not isinstance(value, str) or not value.strip() or len(value) > max_len:
        raise bad_request(
            f"'{name}' must be a non-empty string of at most {max_len} characters", name
        )
    return value


def usd_field(
    body: dict[str, Any],
    name: str,
    *,
    max_decimals: int,
    maximum: Decimal | None = None,
    allow_zero: bool = False,
) -> Decimal | None:
    if body.get(name) is None:
        return None
    try:
        value = parse_usd(body[name], max_decimals=max_decimals, allow_zero=allow_zero)
    except AmountError as exc:
        raise bad_request(f"'{name}' {exc}", name) from None
    if maximum is not None and value > maximum:
        raise bad_request(f"'{name}' must be at most {maximum}", name)
    return value
