"""Signed requests to the payment side: the same `Gateway-Signature` as the webhooks it sends us
(gateway.api.signing), the event id as Idempotency-Key, so that a retry never acts twice."""

import logging
import time
from typing import Any

import aiohttp
import orjson

from gateway.api.signing import SIGNATURE_HEADER, sign

log = logging.getLogger("gateway.payments")
MAX_ANSWER_BYTES = 64 * 1024


async def signed_exchange(
    session: aiohttp.ClientSession, url: str, secret: str, event: dict[str, Any], event_id: str
) -> tuple[int, bytes] | None:
    """POST the event; (status, body) or None when the payment side could not be reached."""
    body = orjson.dumps(event)
    headers = {
        "Content-Type": "application/json",
        "Idempotency-Key": event_id,
        SIGNATURE_HEADER: sign(secret, body, int(time.time())),
    }
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            return resp.status, await resp.content.read(MAX_ANSWER_BYTES)
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("payment side unreachable for %s (%s)", event_id, type(exc).__name__)
        return None


async def signed_post(
    session: aiohttp.ClientSession, url: str, secret: str, event: dict[str, Any], event_id: str
) -> int | None:
    """The status the payment side answered, or None when it could not be reached."""
    answer = await signed_exchange(session, url, secret, event, event_id)
    return None if answer is None else answer[0]
