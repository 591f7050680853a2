"""Every script call and every transaction the gateway sends touches one cluster slot, checked on
what Redis itself saw (MONITOR) while a scenario drives every kind of write: accounts, keys,
purchases, paid, free and streamed requests, refunds, limits, auto top-up, expiry, reads. A call
whose keys spanned two slots would be refused by a cluster (CROSSSLOT)."""

import asyncio
import re
import socket
import threading
from collections import defaultdict
from pathlib import Path

import pytest
import redis
from aiohttp.test_utils import TestClient, TestServer
from redis.crc import key_slot

from gateway.app import create_app
from gateway.runtime.redis_server import RedisServer, free_port
from gateway.tasks.expiry import sweep_once
from tests.support import ThreadedServer, admin_headers, bearer, chat, make_settings, new_account

_ARG = re.compile(rb'"((?:[^"\\]|\\.)*)"')
_ESCAPE = re.compile(rb"\\(x[0-9a-fA-F]{2}|.)")


def _unescape(raw: bytes) -> bytes:
    def one(match: re.Match[bytes]) -> bytes:
        code = match.group(1)
        if code.startswith(b"x") and len(code) == 3:
            return bytes([int(code[1:], 16)])
        return {b"n": b"\n", b"r": b"\r", b"t": b"\t"}.get(code, code)

    return _ESCAPE.sub(one, raw)


class Monitor:
    """MONITOR on a raw socket, in a thread: (client address, command args) in order."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.sendall(b"MONITOR\r\n")
        self.lines: list[bytes] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                piece = self.sock.recv(1 << 16)
            except OSError:
                return
            if not piece:
                return
            buffer += piece
            *lines, buffer = buffer.split(b"\r\n")
            self.lines.extend(lines)

    def stop(self) -> list[tuple[str, list[bytes]]]:
        self.sock.close()
        self.thread.join(10)
        seen = []
        for line in self.lines:
            head = re.match(rb"\+[\d.]+ \[\d+ ([^\]]+)\] ", line)
            if head:
                args = [_unescape(a) for a in _ARG.findall(line[head.end() :])]
                seen.append((head.group(1).decode(), args))
        return seen


def _slots(keys: list[bytes | str]) -> set[int]:
    return {key_slot(k if isinstance(k, bytes) else k.encode()) for k in keys}


@pytest.fixture
def own_redis(tmp_path: Path) -> RedisServer:
    server = RedisServer(tmp_path / "redis", port=free_port(), appendonly=False).start()
    yield server  # type: ignore[misc]
    server.stop()


async def test_every_script_and_transaction_touches_one_slot(
    own_redis: RedisServer, provider: ThreadedServer, tmp_path: Path
) -> None:
    settings = make_settings(
        own_redis.url, provider.url, data_dir=tmp_path / "data", credit_expiry_days=1
    )
    monitor = Monitor(own_redis.port or 0)
    async with TestClient(TestServer(create_app(settings), host="127.0.0.1")) as c:
        account_id, key = await new_account(c, purchase="5.00")
        admin = admin_headers()
        for body in (chat("test/paid"), chat("test/paid", stream=True), chat("test/free:free")):
            assert (await c.post("/api/v1/chat/completions", json=body, headers=bearer(key))).ok
        await c.post("/api/v1/chat/completions", json=chat("test/error-500"), headers=bearer(key))
        made = await c.post(
            f"/admin/v1/accounts/{account_id}/purchases",
            json={"amount": "2.00", "method": "card", "idempotency_key": "one-slot"},
            headers=admin,
        )
        await c.post(f"/admin/v1/purchases/{(await made.json())['id']}/refund", headers=admin)
        await c.put(
            f"/admin/v1/accounts/{account_id}/limits", json={"free-per-day": 7}, headers=admin
        )
        await c.put(
            f"/admin/v1/accounts/{account_id}/auto-topup",
            json={"threshold": "1.00", "amount": "5.00"},
            headers=admin,
        )
        made = await c.post(
            f"/admin/v1/accounts/{account_id}/keys", json={"name": "m"}, headers=admin
        )
        await c.patch(
            f"/admin/v1/keys/{(await made.json())['hash']}", json={"disabled": True}, headers=admin
        )
        for path in ("/api/v1/key", "/api/v1/credits", "/api/v1/activity", "/api/v1/generations"):
            assert (await c.get(path, headers=bearer(key))).status == 200
        await sweep_once(c.app)
    seen = monitor.stop()

    scripts = [args for _, args in seen if args and args[0].upper() in (b"EVALSHA", b"EVAL")]
    assert len(scripts) > 10, "the scenario ran no scripts?"
    for args in scripts:
        keys = args[3 : 3 + int(args[2])]
        assert len(_slots(keys)) <= 1, (args[0], keys)

    # Transactions: the commands between MULTI and EXEC of one connection.
    open_tx: dict[str, list[list[bytes]]] = defaultdict(list)
    checked = 0
    with redis.Redis(port=own_redis.port) as r:
        for client, args in seen:
            name = args[0].upper() if args else b""
            if name == b"MULTI":
                open_tx[client] = []
            elif name == b"EXEC" and client in open_tx:
                keys = [k for cmd in open_tx.pop(client) for k in r.command_getkeys(*cmd)]
                assert len(_slots(keys)) <= 1, keys
                checked += 1
            elif client in open_tx:
                open_tx[client].append(args)
    assert checked > 0, "the scenario ran no transactions?"


async def test_routing_adds_no_redis_round_trip(
    own_redis: RedisServer, provider: ThreadedServer, tmp_path: Path
) -> None:
    """A request that falls back from a failing model to another, with provider preferences,
    still makes two script calls (admission and settlement) and nothing else on Redis: the
    routing decision is made from what the gateway holds."""
    settings = make_settings(own_redis.url, provider.url, data_dir=tmp_path / "data")
    async with TestClient(TestServer(create_app(settings), host="127.0.0.1")) as c:
        _, key = await new_account(c, purchase="5.00")
        warm = await c.post("/api/v1/chat/completions", json=chat("test/paid"), headers=bearer(key))
        assert warm.status == 200  # the scripts are loaded (a first call may meet NOSCRIPT)
        routed = chat(
            "test/error-500",
            models=["test/multi"],
            provider={"order": ["sim2"], "allow_fallbacks": True, "sort": "latency"},
        )
        for body in (chat("test/paid"), routed):
            monitor = Monitor(own_redis.port or 0)
            await asyncio.sleep(0.1)  # MONITOR is on before the request
            resp = await c.post("/api/v1/chat/completions", json=body, headers=bearer(key))
            assert resp.status == 200, await resp.text()
            await c.get("/api/v1/credits", headers=bearer(key))  # the settlement has landed
            await asyncio.sleep(0.1)
            seen = monitor.stop()
            scripts = [a for _, a in seen if a and a[0].upper() in (b"EVALSHA", b"EVAL")]
            generation = resp.headers["X-Generation-Id"].encode()
            per_request = [a for a in scripts if any(generation in arg for arg in a)]
            assert len(per_request) == 2, [a[:3] for a in per_request]


async def test_every_api_makes_one_admission_and_one_settlement(
    own_redis: RedisServer, provider: ThreadedServer, tmp_path: Path
) -> None:
    """Embeddings, the Responses API and Anthropic's Messages API, streamed or not, each make
    exactly the two script calls chat makes (admission, settlement) for their generation."""
    hello = [{"role": "user", "content": "Hello there"}]
    calls = [
        ("/api/v1/embeddings", {"model": "test/paid", "input": ["a", "b"]}),
        ("/api/v1/responses", {"model": "test/paid", "input": "Hello"}),
        ("/api/v1/responses", {"model": "test/paid", "input": "Hello", "stream": True}),
        ("/api/v1/messages", {"model": "test/paid", "max_tokens": 20, "messages": hello}),
        (
            "/api/v1/messages",
            {"model": "test/paid", "max_tokens": 20, "messages": hello, "stream": True},
        ),
    ]
    settings = make_settings(own_redis.url, provider.url, data_dir=tmp_path / "data")
    async with TestClient(TestServer(create_app(settings), host="127.0.0.1")) as c:
        _, key = await new_account(c, purchase="5.00")
        warm = await c.post("/api/v1/chat/completions", json=chat("test/paid"), headers=bearer(key))
        assert warm.status == 200  # the scripts are loaded (a first call may meet NOSCRIPT)
        monitor = Monitor(own_redis.port or 0)  # one watch for them all (stopping one is slow)
        await asyncio.sleep(0.1)  # MONITOR is on before the requests
        generations = []
        for path, body in calls:
            resp = await c.post(path, json=body, headers=bearer(key))
            assert resp.status == 200, await resp.text()
            await resp.read()
            generations.append((path, resp.headers["X-Generation-Id"].encode()))
        await c.get("/api/v1/credits", headers=bearer(key))  # the settlements have landed
        await asyncio.sleep(0.1)
        seen = monitor.stop()
    scripts = [a for _, a in seen if a and a[0].upper() in (b"EVALSHA", b"EVAL")]
    for path, generation in generations:
        per_request = [a for a in scripts if any(generation in arg for arg in a)]
        assert len(per_request) == 2, (path, [a[:3] for a in per_request])


LIMITS_OF_EVERY_KIND = """\
[[limits]]
name = "rpm"
match = "all"
unit = "minute"
requests = 1000

[[limits]]
name = "tpm"
scope = "key"
match = "all"
unit = "minute"
tokens = 1000000

[[limits]]
name = "in-flight"
match = "all"
concurrent = 10
"""


async def test_token_and_concurrency_limits_add_no_round_trip(
    own_redis: RedisServer, provider: ThreadedServer, tmp_path: Path
) -> None:
    """With a request, a token and a concurrency limit on every model, a request (streamed or
    not) still makes its admission and its settlement and nothing else on Redis, each in the
    account's slot: the limits are checked, counted and given back inside those two scripts."""
    limits = tmp_path / "limits.toml"
    limits.write_text(LIMITS_OF_EVERY_KIND)
    settings = make_settings(
        own_redis.url, provider.url, data_dir=tmp_path / "data", limits_file=str(limits)
    )
    async with TestClient(TestServer(create_app(settings), host="127.0.0.1")) as c:
        _, key = await new_account(c, purchase="5.00")
        warm = await c.post("/api/v1/chat/completions", json=chat("test/paid"), headers=bearer(key))
        assert warm.status == 200  # the scripts are loaded (a first call may meet NOSCRIPT)
        monitor = Monitor(own_redis.port or 0)
        await asyncio.sleep(0.1)  # MONITOR is on before the requests
        generations = []
        for body in (chat("test/paid"), chat("test/paid", stream=True)):
            resp = await c.post("/api/v1/chat/completions", json=body, headers=bearer(key))
            assert resp.status == 200, await resp.text()
            assert "x-ratelimit-remaining-tokens" in resp.headers
            await resp.read()
            generations.append(resp.headers["X-Generation-Id"].encode())
        await c.get("/api/v1/credits", headers=bearer(key))  # the settlements have landed
        await asyncio.sleep(0.1)
        seen = monitor.stop()
    scripts = [a for _, a in seen if a and a[0].upper() in (b"EVALSHA", b"EVAL")]
    for generation in generations:
        per_request = [a for a in scripts if any(generation in arg for arg in a)]
        assert len(per_request) == 2, [a[:3] for a in per_request]
        for args in per_request:
            keys = args[3 : 3 + int(args[2])]
            assert any(b":rl:" in k for k in keys), "the limits ride on the script"
            assert len(_slots(keys)) == 1, keys
    sent = [a for client, a in seen if a and client != "lua"]  # not the scripts' own commands
    others = [a for a in sent if a[0].upper() not in (b"EVALSHA", b"EVAL")]
    assert not [a for a in others if any(b":rl:" in arg for arg in a)]
