"""Every secret the gateway holds is taken out of every byte of a provider's answer that reaches a
client: a plain 200 that quotes the key, a stream whose key is split across the provider's writes
at every offset, and a key a model echoes token by token across events (which a client joining
the deltas would otherwise see whole)."""

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st

from config.catalog import ModelConfig, ProviderConfig
from gateway.app import create_app
from gateway.proxy.relay.redaction import REDACTED, Redactor
from tests.proxy.test_sse_relay import _relay
from tests.support import ADMIN_TOKEN, PAID, ThreadedServer, bearer, make_settings, new_account
from tests.support import test_catalog as catalog_of

KEY = "sk-quoted-provider-key-4f0c9a7e1b2d3c4e5f60718293a4b5c6"
SECRETS = (KEY, ADMIN_TOKEN)
BEFORE, AFTER = "your key is ", " (keep it safe)"


def _event(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _delta(text: str) -> dict[str, Any]:
    return {
        "id": "up",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }


def _usage_events() -> bytes:
    done = {"id": "up", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    usage = {
        "id": "up",
        "choices": [],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }
    return _event(done) + _event(usage) + b"data: [DONE]\n\n"


async def _quoting_provider(request: web.Request) -> web.StreamResponse:
    """Quotes a secret (the `user` field says which, how, and where to cut it)."""
    body = await request.json()
    secret, how, cut = body["user"].split("|")
    cut_at = int(cut)
    text = BEFORE + secret + AFTER
    if how == "plain":
        return web.json_response(
            {
                "id": "up",
                "object": "chat.completion",
                "model": "m",
                "system_fingerprint": secret,
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": text},
                    }
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
            }
        )
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    if how == "writes":  # one event, the key's bytes split across two writes
        data = _event(_delta(text)) + _usage_events()
        split = data.index(secret.encode()) + cut_at
        await response.write(data[:split])
        await asyncio.sleep(0.002)  # two reads on the gateway's side, not one
        await response.write(data[split:])
    else:  # "events": the key split across two content deltas, as a model echoing it would
        split = len(BEFORE) + cut_at
        await response.write(_event(_delta(text[:split])))
        await response.write(_event(_delta(text[split:])) + _usage_events())
    return response


@pytest.fixture(scope="module")
def quoting() -> Iterator[ThreadedServer]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", _quoting_provider)
    server = ThreadedServer(app).start()
    yield server
    server.stop()


@pytest.fixture
async def qc(
    redis_url: str,
    provider: ThreadedServer,
    quoting: ThreadedServer,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[TestClient]:
    monkeypatch.setenv("QUOTING_PROVIDER_KEY", KEY)
    providers, models = catalog_of(provider.url)
    providers.append(
        ProviderConfig(
            name="quoting", base_url=quoting.url + "/v1", api_key_env="QUOTING_PROVIDER_KEY"
        )
    )
    models.append(ModelConfig(id="test/quoting", provider="quoting", pricing=PAID))
    settings = make_settings(
        redis_url, provider.url, providers=providers, models=models, admin_token=ADMIN_TOKEN
    )
    async with TestClient(TestServer(create_app(settings), host="127.0.0.1")) as c:
        yield c


def _request(user: str, stream: bool) -> dict[str, Any]:
    return {
        "model": "test/quoting",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": stream,
        "user": user,
    }


def _streamed_content(raw: bytes) -> str:
    text = ""
    for line in raw.split(b"\n"):
        if line.startswith(b"data: {"):
            for choice in orjson.loads(line[6:]).get("choices") or []:
                text += (choice.get("delta") or {}).get("content") or ""
    return text


@pytest.mark.parametrize("how", ["writes", "events"])
async def test_a_key_split_at_every_offset_never_reaches_the_client(
    qc: TestClient, how: str
) -> None:
    _, key = await new_account(qc, purchase="1.00")
    for secret in SECRETS:
        for cut in range(1, len(secret)):
            resp = await qc.post(
                "/api/v1/chat/completions",
                json=_request(f"{secret}|{how}|{cut}", True),
                headers=bearer(key),
            )
            raw = await resp.read()
            assert resp.status == 200, raw[:300]
            assert secret.encode() not in raw, (how, cut)
            content = _streamed_content(raw)
            assert content == BEFORE + REDACTED + AFTER, (how, cut, content)
            assert raw.endswith(b"data: [DONE]\n\n")


async def test_text_that_only_looks_like_a_key_arrives_whole(qc: TestClient) -> None:
    """What is kept back in case it starts a secret is sent once it is clear it does not."""
    _, key = await new_account(qc, purchase="1.00")
    for cut in (1, 5, 20, len(KEY) - 1):
        almost = KEY[:cut]  # a prefix of the key, then the stream goes on with other text
        resp = await qc.post(
            "/api/v1/chat/completions",
            json=_request(f"{almost}|events|{len(almost)}", True),
            headers=bearer(key),
        )
        assert _streamed_content(await resp.read()) == BEFORE + almost + AFTER


async def test_a_plain_answer_that_quotes_a_secret_is_redacted(qc: TestClient) -> None:
    _, key = await new_account(qc, purchase="1.00")
    client = openai.AsyncOpenAI(api_key=key, base_url=str(qc.make_url("/api/v1")), max_retries=0)
    for secret in SECRETS:
        resp = await qc.post(
            "/api/v1/chat/completions",
            json=_request(f"{secret}|plain|0", False),
            headers=bearer(key),
        )
        raw = await resp.read()
        assert resp.status == 200 and secret.encode() not in raw
        answer = await client.chat.completions.create(
            model="test/quoting",
            messages=[{"role": "user", "content": "hi"}],
            user=f"{secret}|plain|0",
        )
        assert answer.choices[0].message.content == BEFORE + REDACTED + AFTER
        assert answer.system_fingerprint == REDACTED
    await client.close()


def _relayed(redactor: Redactor, chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chunks as the relay sends them on, kept-back text included."""
    relay = _relay()
    relay.redactor, relay.texts = redactor, redactor.stream()
    out = b"".join(relay.feed(_event(chunk)) for chunk in chunks) + relay.kept_back()
    return [orjson.loads(line[6:]) for line in out.split(b"\n") if line.startswith(b"data: {")]


def test_stream_redaction_keeps_tool_call_arguments_and_completion_text_whole() -> None:
    redactor = Redactor([KEY, "short"])  # a secret under 8 characters is not redacted
    text = '{"q": "' + KEY + ' short"}'
    pieces = [text[i : i + 7] for i in range(0, len(text), 7)]
    chunks = [
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]},
                },
                {"index": 1, "text": piece},
            ]
        }
        for piece in pieces
    ]
    joined_args, joined_text = "", ""
    for chunk in _relayed(redactor, chunks):
        for choice in chunk["choices"]:
            if choice["index"] == 0:
                joined_args += choice["delta"]["tool_calls"][0]["function"]["arguments"]
            else:
                joined_text += choice["text"]
    assert joined_args == joined_text == '{"q": "' + REDACTED + ' short"}'


def test_a_finishing_choice_takes_back_what_was_kept() -> None:
    first = {"choices": [{"index": 0, "delta": {"content": "see sk-quo"}, "finish_reason": None}]}
    last = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    sent = _relayed(Redactor([KEY]), [first, last])
    assert len(sent) == 2  # nothing left over for an extra chunk
    assert sent[0]["choices"][0]["delta"]["content"] == "see "
    assert sent[1]["choices"][0]["delta"]["content"] == "sk-quo"
    assert sent[1]["choices"][0]["finish_reason"] == "stop"


@given(
    st.lists(st.text("ab-k", min_size=8, max_size=12), min_size=1, max_size=3),
    st.text("ab-kx", max_size=30),
)
def test_held_back_is_the_longest_end_that_begins_a_secret(secrets: list[str], text: str) -> None:
    redactor = Redactor(secrets)
    expected = max(
        (k for s in secrets for k in range(1, len(s)) if text.endswith(s[:k])), default=0
    )
    assert redactor.held_back(text) == expected
