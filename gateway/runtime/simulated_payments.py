"""A SIMULATED payment side for `gateway demo` and the tests: no money moves, and every page says
so. It takes the gateway's signed requests (checkout.requested, refund.requested,
topup.requested) on `POST /requests`, serves a pay page for each checkout, and sends the gateway
the signed webhooks a real payment side would: `payment.succeeded` when the pay page's Pay button
is pressed (or at once for an auto top-up), `payment.failed` for Decline.
"""

import asyncio
import html
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from gateway.api.signing import SIGNATURE_HEADER, BadSignature, StaleSignature, sign, verify

log = logging.getLogger("gateway.simulated_payments")
_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Simulated payment</title></head><body style="font-family: sans-serif; max-width: 36em">
<p><strong>SIMULATED payment side</strong>: no real money moves.</p>{body}</body></html>"""


@dataclass
class SimulatedPayments:
    """`gateway_url` is set once the gateway listens; until then nothing can be paid."""

    request_secret: str
    webhook_secret: str
    gateway_url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    checkouts: dict[str, dict[str, Any]] = field(default_factory=dict)
    base_url: str = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/requests", self._request)
        app.router.add_get("/pay/{checkout_id}", self._pay_page)
        app.router.add_post("/pay/{checkout_id}", self._pay_answer)
        return app

    async def _request(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            verify(self.request_secret, raw, request.headers.get(SIGNATURE_HEADER), time.time())
        except (BadSignature, StaleSignature) as exc:
            return web.json_response({"error": str(exc)}, status=401)
        event = orjson.loads(raw)
        self.requests.append(event)
        data = event.get("data", {})
        if event.get("type") == "checkout.requested":
            self.checkouts.setdefault(data["checkout_id"], data)
            return web.json_response({"url": f"{self.base_url}/pay/{data['checkout_id']}"})
        log.info(
            "simulated payment side: %s %s for $%s (no money moves)",
            event.get("type"),
            event.get("id"),
            data.get("refunded") or data.get("amount"),
        )
        if event.get("type") == "topup.requested":
            paid = {**data, "method": "card"}
            asyncio.get_running_loop().create_task(self.pay_event(paid, str(event["id"]), None))
        return web.json_response({"received": True})

    async def _pay_page(self, request: web.Request) -> web.Response:
        checkout = self.checkouts.get(request.match_info["checkout_id"])
        if checkout is None:
            return web.Response(text=_PAGE.format(body="<p>No such checkout.</p>"), status=404)
        e = html.escape
        body = (
            f"<h1>Pay ${e(checkout['total'])}</h1><p>${e(checkout['amount'])} of credits by "
            f"{e(checkout['method'])}, and a fee of ${e(checkout['fee'])}.</p>"
            '<form method="post"><button name="action" value="pay">Pay</button> '
            '<button name="action" value="decline">Decline</button></form>'
        )
        return web.Response(text=_PAGE.format(body=body), content_type="text/html")

    async def _pay_answer(self, request: web.Request) -> web.Response:
        checkout_id = request.match_info["checkout_id"]
        checkout = self.checkouts.get(checkout_id)
        if checkout is None:
            return web.Response(text=_PAGE.format(body="<p>No such checkout.</p>"), status=404)
        action = (await request.post()).get("action")
        status = await (self.pay(checkout_id) if action == "pay" else self.decline(checkout_id))
        done = "Paid" if action == "pay" else "Declined"
        back = html.escape(str(checkout.get("return_url", "")))
        body = (
            f"<h1>{done}</h1><p>The gateway answered {status}. You can close this tab: the "
            f'Credits page updates itself.</p><p><a href="{back}">Back to Credits</a></p>'
        )
        return web.Response(text=_PAGE.format(body=body), content_type="text/html")

    async def pay(self, checkout_id: str) -> int:
        """The checkout paid: the gateway's webhook status."""
        data = self.checkouts[checkout_id]
        return await self.pay_event(data, f"simpay-{checkout_id}", checkout_id)

    async def pay_event(
        self, data: dict[str, Any], payment_id: str, checkout_id: str | None
    ) -> int:
        paid = {
            "account_id": data["account_id"],
            "amount": data["amount"],
            "method": data["method"],
            "payment_id": payment_id,
        }
        if checkout_id is not None:
            paid["checkout_id"] = checkout_id
        return await self._webhook({"id": f"evt-{payment_id}", "type": "payment.succeeded"}, paid)

    async def decline(self, checkout_id: str) -> int:
        data = self.checkouts[checkout_id]
        failed = {"account_id": data["account_id"], "checkout_id": checkout_id}
        event = {"id": f"evt-decline-{checkout_id}", "type": "payment.failed"}
        return await self._webhook(event, failed)

    async def _webhook(self, event: dict[str, Any], data: dict[str, Any]) -> int:
        body = orjson.dumps({**event, "data": data})
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self.webhook_secret, body, int(time.time())),
        }
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            url = f"{self.gateway_url}/webhooks/payments"
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                log.info("simulated payment %s: the gateway answered %d", event["id"], resp.status)
                return resp.status
