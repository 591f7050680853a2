"""Turning auto top-up on or off, the same for the operator (admin API) and the account holder
(Credits API): `{"threshold": "5.00", "amount": "20.00"}` turns it on, `null` (or `{}`) off."""

from aiohttp import web

from gateway.api.bodies import AutoTopupSettings, read_as
from gateway.http.errors import ApiError, bad_request
from gateway.http.json_input import json_object, read_body
from gateway.state import SERVICES, SETTINGS


async def apply_auto_topup(request: web.Request, account_id: str) -> None:
    raw = await read_body(request)
    body = {} if raw.strip() in (b"", b"null") else await json_object(request)
    settings = request.app[SETTINGS]
    wanted = read_as(AutoTopupSettings, body, max_usd=settings.max_purchase)
    threshold, amount = wanted.threshold, wanted.amount
    if (threshold is None) != (amount is None):
        raise bad_request(
            "give both 'threshold' and 'amount', or neither to turn it off",
            "threshold" if threshold is None else "amount",
        )
    if threshold is not None and not settings.topup_webhook_url:
        raise ApiError(
            409,
            "auto top-up needs GATEWAY_TOPUP_WEBHOOK_URL to send its requests",
            "not_configured",
        )
    await request.app[SERVICES].outbox.set_auto_topup(account_id, threshold, amount)
