"""A full scenario (purchases, keys, paid, free and streaming requests, provider errors, a
provider that quotes its own key, webhooks, auto top-up, metrics), then every secret it used is
searched for in every answer, log line and metric."""

import asyncio
import io
import logging
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from config.catalog import ModelConfig, ProviderConfig
from gateway.api.signing import SIGNATURE_HEADER, sign, verify
from gateway.app import create_app
from metering.accounts import KEY_PREFIX
from tests.support import (
    PAID,
    PROVIDER_SECRET,
    ThreadedServer,
    chat,
    make_settings,
)
from tests.support import test_catalog as catalog_of

ADMIN = "adm-tok-" + secrets.token_hex(16)
WEBHOOK = "whsec-" + secrets.token_hex(16)
TOPUP = "topup-sig-" + secrets.token_hex(16)
METRICS = "metrics-tok-" + secrets.token_hex(16)
PAYREQ = "payreq-sig-" + secrets.token_hex(16)
ECHO_SECRET = "sk-echo-provider-" + secrets.token_hex(16)
TOPUPS = web.AppKey("topups", list)


async def _take_topup(request: web.Request) -> web.Response:
    body = await request.read()
    verify(TOPUP, body, request.headers.get(SIGNATURE_HEADER), time.time())
    request.app[TOPUPS].append((dict(request.headers), body))
    return web.json_response({"ok": True})


async def _take_payment_request(request: web.Request) -> web.Response:
    """The payment side's endpoint for checkouts and refunds (kept with the top-up requests)."""
    body = await request.read()
    verify(PAYREQ, body, request.headers.get(SIGNATURE_HEADER), time.time())
    request.app[TOPUPS].append((dict(request.headers), body))
    return web.json_response({"url": "https://pay.example/checkout/1"})


async def _echo(request: web.Request) -> web.StreamResponse:
    """A provider that quotes back everything it was sent, its key included: in a 400, or in
    a stream's content and its error event."""
    sent = f"Authorization: {request.headers.get('Authorization')}; body: {await request.text()}"
    if not orjson.loads(await request.read()).get("stream"):
        return web.json_response({"error": {"message": f"cannot do this: {sent}"}}, status=400)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    content = {"choices": [{"index": 0, "delta": {"content": sent}}]}
    error = {"error": {"message": f"failed after: {sent}"}}
    for event in (content, error):
        await response.write(b"data: " + orjson.dumps(event) + b"\n\n")
    await response.write(b": " + sent.encode() + b"\n\ndata: [DONE]\n\n")
    return response


@pytest.fixture(scope="module")
def receivers() -> Iterator[tuple[ThreadedServer, ThreadedServer]]:
    topup = web.Application()
    topup[TOPUPS] = []
    topup.router.add_post("/topup", _take_topup)
    topup.router.add_post("/payreq", _take_payment_request)
    echo = web.Application()
    echo.router.add_post("/v1/chat/completions", _echo)
    servers = (ThreadedServer(topup).start(), ThreadedServer(echo).start())
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
async def sc(
    redis_url: str,
    provider: ThreadedServer,
    receivers: tuple[ThreadedServer, ThreadedServer],
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[TestClient]:
    monkeypatch.setenv("ECHO_PROVIDER_KEY", ECHO_SECRET)
    topup, echo = receivers
    providers, models = catalog_of(provider.url)
    providers.append(
        ProviderConfig(name="echo", base_url=echo.url + "/v1", api_key_env="ECHO_PROVIDER_KEY")
    )
    models.append(ModelConfig(id="test/echo", provider="echo", pricing=PAID))
    settings = make_settings(
        redis_url,
        provider.url,
        providers=providers,
        models=models,
        admin_token=ADMIN,
        payments_webhook_secret=WEBHOOK,
        topup_webhook_url=topup.url + "/topup",
        topup_webhook_secret=TOPUP,
        payments_request_url=topup.url + "/payreq",
        payments_request_secret=PAYREQ,
        topup_poll_seconds=0.05,
        metrics_token=METRICS,
    )
    async with TestClient(TestServer(create_app(settings), host="127.0.0.1")) as c:
        yield c


class Seen:
    """Every answer of the scenario: status, headers and body, as one text each."""

    def __init__(self, c: TestClient) -> None:
        self.c = c
        self.answers: list[str] = []
        self.shown_once: list[tuple[str, str]] = []  # (answer, the new key it shows)

    async def call(
        self, method: str, path: str, auth: str | None = None, **kw: Any
    ) -> tuple[int, Any]:
        headers = {**kw.pop("headers", {}), **({"Authorization": f"Bearer {auth}"} if auth else {})}
        resp = await self.c.request(method, path, headers=headers, **kw)
        text = await resp.text()
        answer = f"{resp.status} {resp.reason}\n{dict(resp.headers)}\n{text}"
        try:
            body = orjson.loads(text)
        except orjson.JSONDecodeError:
            body = text
        if isinstance(body, dict) and isinstance(body.get("key"), str):
            self.shown_once.append((answer, body["key"]))  # a new key, shown this once
        else:
            self.answers.append(answer)
        return resp.status, body


def _webhook(event: dict[str, Any], secret: str = WEBHOOK, age: int = 0) -> dict[str, Any]:
    raw = orjson.dumps(event)
    stamp = int(time.time()) - age
    return {"data": raw, "headers": {"Gateway-Signature": sign(secret, raw, stamp)}}


async def _run_scenario(s: Seen, port: int) -> dict[str, str]:
    """Drives every kind of request; returns the secrets it used by name."""
    status, account = await s.call("POST", "/admin/v1/accounts", ADMIN, json={"name": "secrets"})
    assert status == 201
    acct = f"/admin/v1/accounts/{account['id']}"
    purchase = {"amount": "2.00", "method": "card", "idempotency_key": "p-1"}
    assert (await s.call("POST", f"{acct}/purchases", ADMIN, json=purchase))[0] == 201
    assert (await s.call("POST", f"{acct}/purchases", ADMIN, json=purchase))[0] == 200
    key = (await s.call("POST", f"{acct}/keys", ADMIN, json={"name": "app"}))[1]["key"]
    manager = (await s.call("POST", f"{acct}/keys", ADMIN, json={"name": "m", "management": True}))[
        1
    ]["key"]
    created = (await s.call("POST", "/api/v1/keys", manager, json={"name": "ci", "limit": "1"}))[1]
    made, made_hash = created["key"], created["data"]["hash"]
    _, broke = await s.call("POST", "/admin/v1/accounts", ADMIN, json={"name": "broke"})
    broke_key = (await s.call("POST", f"/admin/v1/accounts/{broke['id']}/keys", ADMIN, json={}))[1][
        "key"
    ]
    topup = {"threshold": "2.00", "amount": "10.00"}
    assert (await s.call("PUT", f"{acct}/auto-topup", ADMIN, json=topup))[0] == 200

    generation = ""
    for model, stream, expected in [
        ("test/paid", False, 200),
        ("test/paid", True, 200),
        ("test/free:free", False, 200),
        ("test/error-500", False, 502),
        ("test/error-400", False, 400),
        ("test/error-429", False, 503),
        ("test/garbage", True, 200),  # the error comes as the stream's last chunk
        ("test/drop", True, 200),
        ("test/unreachable", False, 502),
        ("test/echo", False, 400),  # the provider quotes its own key back
        ("test/echo", True, 200),  # in a stream's content, error event and comment
        ("nobody/nothing", False, 404),
    ]:
        status, body = await s.call(
            "POST", "/api/v1/chat/completions", key, json=chat(model, stream=stream)
        )
        assert status == expected, (model, body)
        if model == "test/paid" and not stream:
            generation = body["id"]
    await s.call("POST", "/api/v1/completions", key, json={"model": "test/paid", "prompt": "Hi"})
    await s.call("POST", "/api/v1/chat/completions", made, json=chat("test/paid"))
    for wrong, expected in [(broke_key, 402), (manager, 403)] + [
        (w, 401) for w in (key + "x", key[:-1], ADMIN, "", WEBHOOK)
    ]:
        status, _ = await s.call("POST", "/api/v1/chat/completions", wrong, json=chat("test/paid"))
        assert status == expected, wrong
    for wrong in (key, key + "x", WEBHOOK):
        await s.call("GET", acct, wrong)
    # Unparsable requests that carry a key: answered (and logged) by aiohttp itself.
    for line in (b"Bearer " + key.encode() + b"\x01", b"Bearer " + key.encode() + b"A" * 70_000):
        await _raw(port, line)

    for path in (
        "/api/v1/key",
        "/api/v1/auth/key",
        "/api/v1/credits",
        f"/api/v1/generation?id={generation}",
        "/api/v1/generations",
        "/api/v1/generations.csv",
        "/api/v1/activity",
        "/api/v1/activity.csv",
        "/api/v1/models",
    ):
        assert (await s.call("GET", path, key))[0] == 200, path
    assert (await s.call("GET", "/api/v1/keys", manager))[0] == 200
    assert (await s.call("PATCH", f"/api/v1/keys/{made_hash}", manager, json={"disabled": True}))[
        0
    ] == 200
    assert (await s.call("POST", "/api/v1/chat/completions", made, json=chat("test/paid")))[
        0
    ] == 401
    assert (await s.call("DELETE", f"/api/v1/keys/{made_hash}", manager))[0] == 200
    for path in (acct, f"{acct}/ledger", f"{acct}/limits", "/admin/v1/activity"):
        assert (await s.call("GET", path, ADMIN))[0] == 200, path
    await s.call("PATCH", f"/admin/v1/keys/{made_hash}", ADMIN, json={"limit": "3"})

    paid = {
        "id": "evt-s1",
        "type": "payment.succeeded",
        "data": {
            "account_id": account["id"],
            "amount": "5.00",
            "method": "card",
            "payment_id": "x",
        },
    }
    assert (await s.call("POST", "/webhooks/payments", **_webhook(paid)))[0] == 200
    assert (await s.call("POST", "/webhooks/payments", **_webhook(paid)))[0] == 200
    assert (await s.call("POST", "/webhooks/payments", **_webhook(paid, TOPUP)))[0] == 401
    assert (await s.call("POST", "/webhooks/payments", **_webhook(paid, age=3600)))[0] == 400
    refund = {**paid, "id": "evt-s2", "type": "payment.refunded"}
    assert (await s.call("POST", "/webhooks/payments", **_webhook(refund)))[0] == 200
    # The account holder's Credits API: a checkout and the Refund button ask the payment side.
    again = {**paid, "id": "evt-s3", "data": {**paid["data"], "payment_id": "y"}}
    assert (await s.call("POST", "/webhooks/payments", **_webhook(again)))[0] == 200
    checkout = {"amount": "3.00", "method": "card"}
    assert (await s.call("POST", "/api/v1/credits/checkout", manager, json=checkout))[0] == 201
    assert (await s.call("GET", "/api/v1/credits/summary", manager))[0] == 200
    _, rows = await s.call("GET", "/api/v1/credits/purchases", manager)
    refundable = [r["id"] for r in rows["data"] if r["not_refundable_reason"] is None]
    assert refundable
    for purchase_id in refundable:
        path = f"/api/v1/credits/purchases/{purchase_id}/refund"
        assert (await s.call("POST", path, manager))[0] in (200, 409)
    assert (await s.call("GET", "/api/v1/credits/summary", key))[0] == 403
    return {
        "key": key,
        "management key": manager,
        "key made by the management key": made,
        "key of a broke account": broke_key,
    }


async def _raw(port: int, authorization: bytes) -> None:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
    writer.write(
        b"POST /api/v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Authorization: " + authorization + b"\r\nContent-Length: 2\r\n\r\n{}"
    )
    try:
        await asyncio.wait_for(writer.drain(), 10)
        await asyncio.wait_for(reader.read(), 10)
    except ConnectionError:
        pass
    finally:
        writer.close()


def _forms(name: str, secret: str) -> dict[str, str]:
    """The secret, its part after a key prefix, and every 16 characters of it."""
    forms = {name: secret}
    if secret.startswith(KEY_PREFIX):
        forms[f"{name} without its prefix"] = secret[len(KEY_PREFIX) :]
    for i in range(len(secret) - 15):
        forms[f"{name}[{i}:{i + 16}]"] = secret[i : i + 16]
    return forms


async def test_no_secret_of_a_full_scenario_reaches_a_log_an_answer_or_a_metric(
    sc: TestClient,
    receivers: tuple[ThreadedServer, ThreadedServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from gateway.observability.logs import ACCESS_LOG, JsonFormatter, TextFormatter

    caplog.set_level(logging.DEBUG)
    access_logger = logging.getLogger("gateway.access")
    level, captured = access_logger.level, io.BytesIO()
    ACCESS_LOG.flush()
    ACCESS_LOG.stream, ACCESS_LOG.json = captured, True
    access_logger.setLevel(logging.INFO)
    topup_server, _ = receivers
    seen = Seen(sc)
    try:
        port = sc.server.port
        assert port is not None
        keys = await _run_scenario(seen, port)
        for _ in range(200):  # the auto top-up request goes out within a poll or two
            if topup_server.app[TOPUPS]:
                break
            await asyncio.sleep(0.05)
        assert topup_server.app[TOPUPS], "no auto top-up request was sent"
        assert (await seen.call("GET", "/metrics"))[0] == 401
        assert (await seen.call("GET", "/metrics", "wrong-" + METRICS))[0] == 401
        status, scrape = await seen.call("GET", "/metrics", METRICS)
        assert status == 200 and "gateway_requests_total" in scrape
        for path in ("/healthz", "/readyz"):
            await seen.call("GET", path)
        ACCESS_LOG.flush()
    finally:
        ACCESS_LOG.stream = None
        access_logger.setLevel(level)

    used = {
        **keys,
        "provider key": PROVIDER_SECRET,
        "echoing provider's key": ECHO_SECRET,
        "admin token": ADMIN,
        "payment webhook secret": WEBHOOK,
        "top-up signing secret": TOPUP,
        "payment request signing secret": PAYREQ,
        "metrics token": METRICS,
    }
    formatted = [
        formatter.format(record)
        for record in caplog.records
        for formatter in (JsonFormatter(), TextFormatter())
    ]
    places = {
        "answers": "\n".join(seen.answers),
        "log lines": caplog.text + "\n".join(formatted),
        "access log": captured.getvalue().decode(),
        "metrics": scrape,
        "auto top-up requests": "\n".join(
            f"{headers}\n{body.decode()}" for headers, body in topup_server.app[TOPUPS]
        ),
    }
    assert places["access log"].count('"route"') > 50
    assert len(caplog.records) > 0 and len(seen.answers) > 50
    for name, secret in used.items():
        for form_name, form in _forms(name, secret).items():
            for place, text in places.items():
                assert form not in text, f"the {form_name} is in the {place}"
    # A new key is shown once, in the answer that made it, and nothing else secret with it.
    assert len(seen.shown_once) == 4
    for answer, new_key in seen.shown_once:
        assert answer.count(new_key) == 1
        rest = answer.replace(new_key, "")
        for name, secret in used.items():
            assert secret not in rest and secret[-16:] not in rest, name
    assert "Traceback" not in places["answers"] and "Traceback" not in places["log lines"]
