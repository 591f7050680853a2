"""Broken HTTP on a raw socket (client libraries refuse to send most of it): bare CR or LF in
header values, folded and nameless lines, huge and countless headers, invalid UTF-8 in header names,
values and bodies, contradictory lengths, broken chunking and gzip, a gzip bomb, a client that hangs
up mid-body, CRLF in the path. The server answers 400/431 (or the gateway's own clear 4xx) or
closes the connection; never a 5xx, a stack trace or a hang (every wait is bounded); nothing is
written and no 5xx is counted in the metrics. aiohttp's log line for such a request quotes nothing.
"""

import asyncio
import gzip
import logging
import secrets
import time
from pathlib import Path

import orjson
import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from gateway.runtime.redis_server import free_port
from tests.hostile import CHAT, state_of
from tests.processes import answers, gateway_process, paid_model_config, stop, wait_until
from tests.support import ThreadedServer, admin_headers, bearer, new_account

WAIT = 10.0  # the bound on every wait for the server


async def _exchange(
    port: int, data: bytes, *, half_close: bool = False
) -> tuple[int | None, bytes]:
    """Send `data` on a new connection and read the whole answer: (status, bytes), or (None, b"")
    when the server closed the connection without one. Every wait is bounded by WAIT."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), WAIT)
    answer = b""
    try:
        try:
            writer.write(data)
            await asyncio.wait_for(writer.drain(), WAIT)
            if half_close:
                writer.write_eof()
        except (ConnectionError, OSError):
            pass  # the server answered and closed before it read everything
        deadline = time.monotonic() + WAIT
        while True:
            try:
                piece = await asyncio.wait_for(reader.read(65536), deadline - time.monotonic())
            except ConnectionError:
                break
            if not piece:
                break
            answer += piece
    finally:
        writer.close()
    if not answer:
        return None, b""
    assert answer.startswith(b"HTTP/1."), answer[:200]
    return int(answer.split(b" ", 2)[1]), answer


def _request(
    headers: list[bytes], body: bytes = b"", path: bytes = b"/api/v1/chat/completions"
) -> bytes:
    lines = [b"POST " + path + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close", *headers]
    if body and not any(h.lower().startswith(b"transfer-encoding") for h in headers):
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


REFUSED: set[int | None] = {400, 431, None}  # None: closed without an answer
Case = tuple[str, bytes, set[int | None], bool]  # name, bytes, statuses allowed, half-close


def _raw_cases(key: bytes) -> list[Case]:
    auth = b"Authorization: Bearer " + key
    admin = ("Authorization: " + admin_headers()["Authorization"]).encode()
    body = orjson.dumps(CHAT)
    refusable = body.replace(b'"model"', b'"max_tokens":-1,"model"')  # a 400 if it gets through
    bomb = gzip.compress(b'{"model": "test/paid", "x": "' + b"0" * 64_000_000 + b'"}')
    chunked, gz = b"Transfer-Encoding: chunked", b"Content-Encoding: gzip"
    crlf = b"%0D%0ASet-Cookie:%20x=1"

    def post(*headers: bytes, data: bytes = body, path: bytes = b"", key: bool = True) -> bytes:
        sent = [auth, *headers] if key else list(headers)
        return _request(sent, data, path or b"/api/v1/chat/completions")

    def get(path: bytes) -> bytes:
        return b"GET" + post(data=b"", path=path).removeprefix(b"POST")

    refused = {
        "bare CR in a value": post(b"X-Request-Id: a\rSet-Cookie: x=1"),
        "bare LF in a value": post(b"X-Request-Id: a\nSet-Cookie: x=1"),
        "CR in the key": post(b"Authorization: Bearer a\rb" + key, key=False),
        "folded line": post(b"X-A: a", b" Set-Cookie: x=1"),
        "NUL in a value": post(b"X-A: a\x00b"),
        "CR in a host header": post(b"X-Forwarded-Host: a\rb"),
        "no colon": post(b"X-A b"),
        "space before the colon": post(auth.replace(b":", b" :", 1), key=False),
        "100 KB Authorization": post(auth + b"A" * 100_000, key=False),
        "100 KB other header": post(b"X-Big: " + b"B" * 100_000),
        "100 KB URL": post(path=b"/api/v1/chat/completions?" + b"q" * 100_000),
        "5000 headers": post(*(b"X-H%d: v" % i for i in range(5000))),
        "invalid UTF-8 header name": post(b"X-\xff: v"),
        "two Content-Lengths": post(b"Content-Length: 3"),
        "negative Content-Length": post(b"Content-Length: -1", data=b"") + body,
        "Content-Length and chunked": post(b"Content-Length: 5", chunked, data=b"0\r\n\r\n"),
        "bad chunk size": post(chunked, data=b"zz\r\n" + body + b"\r\n0\r\n\r\n"),
        "broken chunk": post(chunked, data=b'5\r\n{"mod\r\nxx\r\n'),
        "unknown encoding": post(b"Content-Encoding: br"),
        "not HTTP (TLS hello)": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,
    }
    gone: set[int | None] = {None, 400, 499}
    return [(name, data, REFUSED, False) for name, data in refused.items()] + [
        (
            "huge Content-Length",
            post(b"Content-Length: " + b"9" * 30, data=b"") + body,
            REFUSED | {413},
            False,
        ),
        ("invalid UTF-8 in the key", post(auth + b"\xff\xfe", key=False), {401}, False),
        ("invalid UTF-8 request id", post(b"X-Request-Id: \xff\xfe", data=refusable), {400}, False),
        ("invalid UTF-8 body", post(data=body.replace(b"Hello", b"\xff\xfe\xc3")), {400}, False),
        (
            "invalid UTF-8 admin token",
            post(b"Authorization: Bearer \xff", data=b"{}", path=b"/admin/v1/accounts", key=False),
            {401},
            False,
        ),
        (
            "invalid UTF-8 signature",
            post(
                b"Gateway-Signature: t=1,v1=\xff", data=b"{}", path=b"/webhooks/payments", key=False
            ),
            {401},
            False,
        ),
        ("broken gzip", post(gz), {400}, False),
        (
            "broken gzip, admin",
            post(admin, gz, path=b"/admin/v1/accounts", key=False),
            {400},
            False,
        ),
        ("gzip bomb", post(gz, data=bomb), {413}, False),
        ("hang up mid-body", post(b"Content-Length: 1000", data=b"") + body, gone, True),
        (
            "admin body cut short",
            post(admin, b"Content-Length: 100", data=b"", path=b"/admin/v1/accounts", key=False)
            + b"{",
            gone,
            True,
        ),
        ("CRLF in the query", get(b"/api/v1/generation?id=" + crlf), {404}, False),
        ("CRLF in the path", get(b"/api/v1/keys/" + crlf), {403, 404}, False),
    ]


async def test_broken_http_is_refused_and_writes_nothing(
    hc: TestClient, redis: Redis, provider: ThreadedServer
) -> None:
    account_id, key = await new_account(hc, purchase="5.00")
    port = hc.server.port
    assert port is not None
    before = await state_of(redis, provider, account_id)
    metrics_before = await (await hc.get("/metrics")).text()
    for name, data, allowed, half_close in _raw_cases(key.encode()):
        status, answer = await _exchange(port, data, half_close=half_close)
        assert status in allowed, (name, answer[:400])
        head, _, text = answer.partition(b"\r\n\r\n")
        assert b"set-cookie" not in head.lower(), name  # nothing injected into the answer
        assert b"Traceback" not in answer and b'File "' not in answer, name
        if status is not None and b"application/json" in head:
            error = orjson.loads(text)["error"]
            assert error["code"] == status and error["metadata"]["error_type"], name
    await asyncio.sleep(0.3)  # a handler of a lost connection may still be finishing
    assert await state_of(redis, provider, account_id) == before
    assert _five_hundreds(await (await hc.get("/metrics")).text()) == _five_hundreds(metrics_before)
    healthy = await hc.get("/healthz")
    assert healthy.status == 200
    ok = await hc.post("/api/v1/chat/completions", json=CHAT, headers=bearer(key))
    assert ok.status == 200  # the server still serves


def _five_hundreds(scrape: str) -> list[str]:
    return sorted(
        line
        for line in scrape.splitlines()
        if line.startswith(("gateway_http_requests_total", "gateway_requests_total"))
        and 'status_class="5xx"' in line
    )


async def test_broken_requests_leave_one_quiet_log_line(
    hc: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp logs an unparsable request at ERROR with the offending bytes, so a key in a broken
    Authorization line would be in the log: the gateway makes it one INFO line quoting nothing."""
    caplog.set_level(logging.DEBUG)
    _, key = await new_account(hc, purchase="1.00")
    port = hc.server.port
    assert port is not None
    auth = b"Authorization: Bearer " + key.encode()
    for data in (
        _request([auth + b"\x01"], b"{}"),
        _request([auth + b"A" * 100_000], b"{}"),
        _request([auth.replace(b":", b" :", 1)], b"{}"),
        _request([auth, b"Content-Encoding: gzip"], b"{}"),
    ):
        await _exchange(port, data)
    await _exchange(port, _request([auth, b"Content-Length: 100"]) + b"{", half_close=True)
    await asyncio.sleep(0.3)
    server_lines = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(server_lines) >= 4
    assert all(r.levelname == "INFO" and r.exc_info is None for r in server_lines)
    assert key not in caplog.text and key[len("sk-gw-v1-") :][:16] not in caplog.text
    assert "Traceback" not in caplog.text


def _quotes(answer: bytes, secret: bytes) -> bool:
    """The secret, whole or any 16-byte piece of it, is in the answer."""
    return any(secret[i : i + 16] in answer for i in range(max(len(secret) - 15, 1)))


async def test_unparsable_heads_are_json_errors_that_quote_no_header(tmp_path: Path) -> None:
    """A real `gateway serve` on a raw socket: a request whose header block aiohttp cannot parse
    is answered in the JSON error shape, and no header value (the API key least of all) is in it.
    aiohttp's own answer is plain text that quotes the raw line, key included."""
    key = b"sk-gw-v1-" + secrets.token_hex(24).encode()
    admin = secrets.token_hex(16)
    port = free_port()
    proc = gateway_process(
        [
            "serve",
            "--config",
            str(paid_model_config(tmp_path, "http://127.0.0.1:9")),
            "--port",
            str(port),
        ],
        {"GATEWAY_DATA_DIR": str(tmp_path / "data"), "GATEWAY_ADMIN_TOKEN": admin},
    )
    try:
        ready = await asyncio.to_thread(
            wait_until, lambda: answers(f"http://127.0.0.1:{port}/healthz"), 30
        )
        assert ready, "gateway serve did not start"
        auth = b"Authorization: Bearer " + key
        cases = {
            "a control byte after the key": [auth + b"\x01"],
            "no colon, the key in the line": [b"Authorization Bearer " + key],
            "space before the colon": [auth.replace(b":", b" :", 1)],
            "a line over the limit": [auth + b"A" * 100_000],
            "the admin token, broken": [b"Authorization: Bearer " + admin.encode() + b"\x7f"],
            "a folded line after the key": [auth, b" folded"],
        }
        for name, headers in cases.items():
            status, answer = await _exchange(port, _request(headers, b"{}"))
            assert status in (400, 431), (name, answer[:300])
            head, _, body = answer.partition(b"\r\n\r\n")
            assert b"application/json" in head.lower(), (name, answer[:300])
            error = orjson.loads(body)["error"]
            assert error["code"] == status and error["metadata"]["error_type"] == "bad_request"
            assert not _quotes(answer, key), (name, answer[:300])
            assert not _quotes(answer, admin.encode()), (name, answer[:300])
            assert b"Bearer" not in answer and b"Traceback" not in answer, name
    finally:
        stop(proc)
    log = proc.stderr.read() if proc.stderr else ""
    assert key.decode()[9:25] not in log and admin[:16] not in log
