"""Mixed client traffic for the fault tests and the soak: streaming and not, free and paid, some
clients that hang up early, each outcome recorded as the client saw it, so that an audit can hold
the gateway's books against what its clients were told.

Closed loop (`concurrency` clients back to back) or open loop (`rate` requests a second, spread
over up to `concurrency` clients in flight).
"""

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from decimal import Decimal

import aiohttp
import orjson

HUNG_UP = -1  # the client closed the connection on purpose
NO_ANSWER = 0  # the connection failed or timed out


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int
    model: str
    streamed: bool
    generation_id: str | None = None
    cost_nanos: int | None = None  # usage.cost as the client was told it, when it was
    error_type: str | None = None


@dataclass(slots=True)
class Mix:
    """What the traffic is made of; shares are probabilities per request."""

    paid_models: list[str]
    free_models: list[str] = field(default_factory=list)
    free_share: float = 0.0
    stream_share: float = 0.3
    hang_up_share: float = 0.0


def cost_nanos(cost: object) -> int | None:
    """usage.cost is a JSON number with at most nine decimals: exact through its repr."""
    if cost is None or isinstance(cost, bool) or not isinstance(cost, int | float):
        return None
    return int(Decimal(repr(cost)) * 1_000_000_000)


class Traffic:
    def __init__(
        self,
        base_url: str,
        key: str,
        mix: Mix,
        *,
        concurrency: int = 16,
        rate: float | None = None,
        seed: int = 7,
        request_timeout: float = 30.0,
    ) -> None:
        self.url = base_url + "/api/v1/chat/completions"
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self.mix = mix
        self.concurrency = concurrency
        self.rate = rate
        self.random = random.Random(seed)
        self.timeout = aiohttp.ClientTimeout(total=request_timeout)
        self.outcomes: list[Outcome] = []

    async def run(self, seconds: float) -> list[Outcome]:
        deadline = time.monotonic() + seconds
        connector = aiohttp.TCPConnector(limit=self.concurrency, force_close=False)
        async with aiohttp.ClientSession(connector=connector, timeout=self.timeout) as session:
            if self.rate is None:
                await asyncio.gather(
                    *(self._closed_loop(session, deadline) for _ in range(self.concurrency))
                )
            else:
                await self._open_loop(session, deadline, self.rate)
        return self.outcomes

    async def _closed_loop(self, session: aiohttp.ClientSession, deadline: float) -> None:
        while time.monotonic() < deadline:
            await self.one(session)

    async def _open_loop(
        self, session: aiohttp.ClientSession, deadline: float, rate: float
    ) -> None:
        slots = asyncio.Semaphore(self.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        started = time.monotonic()
        sent = 0

        async def send() -> None:
            try:
                await self.one(session)
            finally:
                slots.release()

        while (now := time.monotonic()) < deadline:
            due = int((now - started) * rate) - sent
            for _ in range(max(0, due)):
                await slots.acquire()  # a full house waits: the offered rate drops, never queues
                task = asyncio.create_task(send())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
            await asyncio.sleep(0.002)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def one(self, session: aiohttp.ClientSession) -> None:
        """One request, its outcome appended (every failure is an outcome, never an exception)."""
        mix, rnd = self.mix, self.random
        free = bool(mix.free_models) and rnd.random() < mix.free_share
        model = rnd.choice(mix.free_models if free else mix.paid_models)
        stream = rnd.random() < mix.stream_share
        hang_up = rnd.random() < mix.hang_up_share
        body: dict[str, object] = {
            "model": model,
            "messages": [{"role": "user", "content": f"Hello there {rnd.randrange(10**6)}"}],
        }
        if stream:
            body["stream"] = True
        try:
            if hang_up and not stream:
                await self._hang_up_early(session, body, model, rnd.uniform(0.0, 0.02))
                return
            async with session.post(
                self.url, data=orjson.dumps(body), headers=self.headers
            ) as resp:
                gen_id = resp.headers.get("X-Generation-Id")
                if resp.status != 200:
                    error = await _error_type(resp)
                    self.outcomes.append(Outcome(resp.status, model, stream, gen_id, None, error))
                elif stream:
                    self.outcomes.append(await _read_stream(resp, model, gen_id, hang_up))
                else:
                    answer = orjson.loads(await resp.read())
                    cost = cost_nanos(answer.get("usage", {}).get("cost"))
                    self.outcomes.append(Outcome(200, model, False, gen_id, cost))
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.outcomes.append(Outcome(NO_ANSWER, model, stream, None, None, type(exc).__name__))

    async def _hang_up_early(
        self, session: aiohttp.ClientSession, body: dict[str, object], model: str, after: float
    ) -> None:
        request = asyncio.ensure_future(session.post(self.url, json=body, headers=self.headers))
        done, _ = await asyncio.wait({request}, timeout=after)
        if not done:
            request.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError, TimeoutError):
                await request
            self.outcomes.append(Outcome(HUNG_UP, model, False))
            return
        resp = request.result()
        gen_id = resp.headers.get("X-Generation-Id")
        resp.close()  # answered before the client gave up: it never read the body
        self.outcomes.append(Outcome(HUNG_UP, model, False, gen_id))


async def _error_type(resp: aiohttp.ClientResponse) -> str | None:
    with contextlib.suppress(ValueError, aiohttp.ClientError):
        error = orjson.loads(await resp.read()).get("error", {})
        return str(error.get("type") or error.get("code"))
    return None


async def _read_stream(
    resp: aiohttp.ClientResponse, model: str, gen_id: str | None, hang_up: bool
) -> Outcome:
    cost: int | None = None
    error: str | None = None
    async for line in resp.content:
        if hang_up:
            resp.close()  # one piece read, then the client goes away mid-stream
            return Outcome(HUNG_UP, model, True, gen_id)
        if not line.startswith(b"data:") or line.strip() == b"data: [DONE]":
            continue
        event = orjson.loads(line[5:])
        if "error" in event:
            error = str(event["error"].get("type") or event["error"].get("code"))
        if event.get("usage") and "cost" in event["usage"]:
            cost = cost_nanos(event["usage"]["cost"])
    return Outcome(200, model, True, gen_id, cost, error)
