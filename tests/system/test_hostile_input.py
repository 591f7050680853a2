"""Hostile numbers through the real server: in every numeric field of every endpoint that takes
a body (completions, the admin API, the management-key API, signed payment webhooks), numbers JSON
cannot hold, out of range, and of the wrong type. Each is a 400 in the error format of
billing-rules.md naming the field, never a 5xx or a stack trace; and nothing is written: the
account's Redis keys are byte for byte what they were (balance, ledger, keys, usage records,
limits), no account is created and the provider is never called.

test_fuzz.py fuzzes the body parser in-process; here every request goes over HTTP. Broken HTTP
itself is in test_hostile_http.py."""

import time
from typing import Any

import aiohttp
import orjson
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from gateway.api.signing import sign
from tests.hostile import CHAT, WEBHOOK_SECRET, state_of
from tests.support import ThreadedServer, admin_headers, bearer, new_account

PARSE_FAILS = ["1e400", "-1e400", "NaN", "Infinity", "-Infinity", "1e999999", "0x10", "+1"]
HUGE = ["123456789012345678901234567890", "-123456789012345678901234567890"]  # become floats
NOT_NUMBERS = ['"7"', "true", "false", "[]", "[1]", "{}", '{"a": 1}']
USD_BAD = [
    *PARSE_FAILS,
    *HUGE,
    *NOT_NUMBERS[1:],  # "7" is seven dollars
    "-1",
    "1.5",
    "18446744073709551615",
    *(
        orjson.dumps(s).decode()
        for s in [
            "-1",
            "-0.01",
            "1e3",
            "1E3",
            "NaN",
            "Infinity",
            "-Infinity",
            "0x10",
            "\u0661\u0660",  # Arabic-Indic digits: Decimal() reads them as 10
            "1_0",  # Decimal() reads 10
            "10.5.1",
            "",
            " ",
            "100000.01",  # over max_purchase
            "9" * 40,
            "0.0000000001",  # ten decimals
        ]
    ),
]
COMPLETION = {"model": "test/paid", "prompt": "Hello"}
PROBABILITY = ["-0.01", "1.01", "-1"]
# Per field, what it must refuse beyond what JSON cannot hold and what is not a number.
COMPLETION_FIELDS: dict[str, list[str]] = {
    "max_tokens": ["0", "-1", "1.5", "-9223372036854775808"],
    "max_completion_tokens": ["0", "-1", "1.5"],
    "n": ["0", "-1", "1.5", "17", "18446744073709551615"],
    "best_of": ["0", "-1", "2.5", "17", "18446744073709551615"],
    "temperature": ["-0.01", "2.01", "-1"],
    "top_p": PROBABILITY,
    "min_p": PROBABILITY,
    "top_a": PROBABILITY,
    "presence_penalty": ["-2.01", "2.01"],
    "frequency_penalty": ["-2.01", "2.01"],
    "repetition_penalty": ["-1", "2.01"],
    "top_k": ["-1", "1.5"],
    "seed": ["1.5", "18446744073709551615", "-9223372036854775809"],
    "top_logprobs": ["-1", "21", "1.5"],
}
LOGIT_BIAS_BAD = ['{"50256": 101}', '{"50256": -101}', '{"50256": "x"}', '{"1": null}', "[]", "1"]


def _body(base: dict[str, Any], field: str, literal: str) -> bytes:
    """`base` with `field` set to a raw JSON literal (one json.dumps could not write)."""
    inner = orjson.dumps(base)[1:-1]
    return b"{" + inner + (b"," if inner else b"") + orjson.dumps(field) + b":" + literal.encode()


def _close(body: bytes) -> bytes:
    return body + b"}"


async def _refused(resp: aiohttp.ClientResponse, what: object, field: str | None = None) -> None:
    """A 4xx in the error format of billing-rules.md, naming the field when the JSON parsed."""
    text = await resp.text()
    assert 400 <= resp.status < 500, (what, resp.status, text)
    assert resp.content_type == "application/json", what
    body = orjson.loads(text)
    error = body["error"]
    assert set(body) == {"error"} and error["code"] == resp.status, what
    assert isinstance(error["message"], str) and error["message"], what
    assert isinstance(error["metadata"]["error_type"], str), what
    assert "Traceback" not in text and 'File "' not in text, what
    if field is not None:
        assert error["metadata"].get("field") == field, (what, text)


async def _post_all(
    c: TestClient,
    method: str,
    url: str,
    base: dict[str, Any],
    fields: dict[str, list[str]],
    headers: dict[str, str],
) -> int:
    sent = 0
    for field, literals in fields.items():
        for literal in literals:
            raw = _close(_body(base, field, literal))
            resp = await c.request(method, url, data=raw, headers=headers)
            try:
                orjson.loads(raw)
                named: str | None = field
            except orjson.JSONDecodeError:
                named = None
            await _refused(resp, (url, raw[-80:]), named)
            sent += 1
    return sent


async def test_numbers_in_completion_requests(
    hc: TestClient, redis: Redis, provider: ThreadedServer
) -> None:
    account_id, key = await new_account(hc, purchase="5.00")
    before = await state_of(redis, provider, account_id)
    common = PARSE_FAILS + HUGE + NOT_NUMBERS
    fields = {name: extra + common for name, extra in COMPLETION_FIELDS.items()}
    fields["logit_bias"] = [*LOGIT_BIAS_BAD, *PARSE_FAILS]
    fields["stream"] = ["1", "0", '"true"', "[]", *PARSE_FAILS]
    sent = 0
    for url, base, logprobs in (
        ("/api/v1/chat/completions", CHAT, ["1", "0", "1.5", '"true"', "[]", *PARSE_FAILS]),
        ("/api/v1/completions", COMPLETION, ["-1", "6", "1.5", "true", *PARSE_FAILS, *HUGE]),
    ):
        sent += await _post_all(
            hc, "POST", url, base, {**fields, "logprobs": logprobs}, bearer(key)
        )
    assert sent > 400
    assert await state_of(redis, provider, account_id) == before
    # The same fields with good values are a request the provider answers.
    good = {**CHAT, "temperature": 2, "top_p": 0.5, "presence_penalty": -2, "top_k": 0, "seed": -1}
    ok = await hc.post(
        "/api/v1/chat/completions",
        json={**good, "logprobs": True, "top_logprobs": 20, "logit_bias": {"1": -100}},
        headers=bearer(key),
    )
    assert ok.status == 200, await ok.text()


async def _management_key(c: TestClient, account_id: str) -> tuple[str, str]:
    resp = await c.post(
        f"/admin/v1/accounts/{account_id}/keys",
        json={"name": "manager", "management": True},
        headers=admin_headers(),
    )
    assert resp.status == 201
    body = await resp.json()
    return body["key"], body["hash"]


async def test_numbers_in_the_admin_and_key_apis(
    hc: TestClient, redis: Redis, provider: ThreadedServer
) -> None:
    account_id, _ = await new_account(hc, purchase="5.00")
    manager, manager_hash = await _management_key(hc, account_id)
    created = await hc.post("/api/v1/keys", json={"name": "k"}, headers=bearer(manager))
    key_hash = (await created.json())["data"]["hash"]
    before = await state_of(redis, provider, account_id)
    admin = admin_headers()
    not_bool = ["0", "1", '"true"', '"false"', "[]", "{}", *PARSE_FAILS]
    expiry = [
        *PARSE_FAILS,
        *HUGE,
        "1700000000",
        '"9999-12-31T23:59:59-23:59"',
        '"0001-01-01T00:00:00+23:59"',
        '"2027-01-01T00:00:00"',
        '"' + "9" * 50 + '"',
    ]
    override = ['"Unlimited"', "-1", "1.5", "1000000000000001", *PARSE_FAILS, *HUGE, *NOT_NUMBERS]
    accounts = f"/admin/v1/accounts/{account_id}"
    cases: list[tuple[str, str, dict[str, Any], dict[str, list[str]], dict[str, str]]] = [
        ("POST", "/admin/v1/accounts", {"name": "x"}, {"grant": USD_BAD}, admin),
        (
            "POST",
            f"{accounts}/purchases",
            {"method": "card", "idempotency_key": "hostile"},
            {"amount": [*USD_BAD, "0", '"0"', '"0.001"', '"-0"']},
            admin,
        ),
        ("PUT", f"{accounts}/auto-topup", {"amount": "5.00"}, {"threshold": USD_BAD}, admin),
        ("PUT", f"{accounts}/auto-topup", {"threshold": "5.00"}, {"amount": USD_BAD}, admin),
        (
            "POST",
            f"{accounts}/keys",
            {"name": "k"},
            {"limit": USD_BAD, "management": not_bool, "expires_at": expiry},
            admin,
        ),
        (
            "PATCH",
            f"/admin/v1/keys/{key_hash}",
            {},
            {"limit": USD_BAD, "disabled": not_bool, "expires_at": expiry},
            admin,
        ),
        ("PUT", f"{accounts}/limits", {}, {"free-per-day": override}, admin),
        ("PUT", f"{accounts}/limits", {"free-per-day": 5}, {"free-per-minute": override}, admin),
        (
            "POST",
            "/api/v1/keys",
            {"name": "k"},
            {"limit": USD_BAD, "management": not_bool, "expires_at": expiry},
            bearer(manager),
        ),
        (
            "PATCH",
            f"/api/v1/keys/{key_hash}",
            {},
            {"limit": USD_BAD, "disabled": not_bool, "expires_at": expiry},
            bearer(manager),
        ),
    ]
    sent = 0
    for method, url, base, fields, headers in cases:
        sent += await _post_all(hc, method, url, base, fields, headers)
    assert sent > 300
    assert await state_of(redis, provider, account_id) == before
    listed = await (await hc.get("/api/v1/keys", headers=bearer(manager))).json()
    assert listed["total"] == 3 and {manager_hash, key_hash} <= {k["hash"] for k in listed["data"]}


async def test_numbers_in_signed_payment_webhooks(
    hc: TestClient, redis: Redis, provider: ThreadedServer
) -> None:
    account_id, _ = await new_account(hc)
    before = await state_of(redis, provider, account_id)
    for literal in [*USD_BAD, "0", '"0"', '"0.001"']:
        data = _close(
            _body(
                {"account_id": account_id, "method": "card", "payment_id": "p"}, "amount", literal
            )
        )
        raw = b'{"id":"evt-h","type":"payment.succeeded","data":' + data + b"}"
        resp = await hc.post(
            "/webhooks/payments",
            data=raw,
            headers={"Gateway-Signature": sign(WEBHOOK_SECRET, raw, int(time.time()))},
        )
        await _refused(resp, literal)
    assert await state_of(redis, provider, account_id) == before
