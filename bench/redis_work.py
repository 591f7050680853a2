"""What one metered request costs Redis: the admission and settlement scripts (and the Activity
rollups' fold, where there is one), run for real against a Redis of its own, measured by the
server itself.

    python -m bench.redis_work [--requests 3000] [--accounts 1] [--in-flight 16]
                               [--lease-above 100]

Prints µs of Redis CPU per request from the server process's own CPU time (/proc) and, per
script, from `INFO commandstats` (which counts the commands a script runs inside it as well).
Without the gateway in the way, the figures move only with what the scripts do: the number to
watch while making settlement cheaper. `make bench` gives the same figure under HTTP load.
"""

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.procs import cpu_seconds
from gateway.redis_clients import open_clients
from gateway.runtime.redis_server import RedisServer, free_port
from metering.accounts import AccountStore
from metering.admission import Metering
from metering.leasing.lease import LeaseTicket
from metering.rollup_fold import RollupFold
from metering.scripts import Scripts
from metering.usage import UsageRecord, new_generation_id

GRANT = 10**15  # nanodollars: never runs out


def realistic_record(account_id: str, key_hash: str, generation_id: str) -> UsageRecord:
    """A record the size the gateway writes for a chat completion (about 660 bytes)."""
    return UsageRecord(
        id=generation_id,
        account_id=account_id,
        key_hash=key_hash,
        model="openai/gpt-4o-mini",
        provider_name="openai",
        upstream_model="gpt-4o-mini-2024-07-18",
        tokens_prompt=812,
        tokens_completion=215,
        native_tokens_cached=0,
        native_tokens_reasoning=0,
        cost=250_800,
        latency_ms=312,
        generation_time_ms=1_840,
        streamed=True,
        cancelled=False,
        finish_reason="stop",
        status=200,
        usage_source="provider",
        created_at="2026-12-07T12:00:00.000Z",
        created_at_ms=1_796_644_800_000,
        upstream_id="chatcmpl-AbCdEfGhIjKlMnOpQrStUvWxYz012",
        external_user="user-1234",
        origin="https://example.com/",
    )


async def _commandstats(redis: Any) -> dict[str, tuple[int, int]]:
    """calls and µs per command, as the server counts them."""
    info = await redis.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"])) for name, v in info.items()
    }


async def _in_turns(count: int, in_flight: int, one: Callable[[int], Awaitable[None]]) -> None:
    queue = iter(range(count))

    async def lane() -> None:
        for i in queue:
            await one(i)

    await asyncio.gather(*(lane() for _ in range(in_flight)))


async def measure(
    requests: int,
    accounts: int,
    in_flight: int,
    pid: int,
    url: str,
    detail: bool,
    lease_above: float = 0.0,
) -> None:
    """The gateway's own clients: the request path's scripts batched per loop turn."""
    clients = await open_clients(url, timeout=5.0)
    redis = clients.redis
    scripts = Scripts(redis)
    store = AccountStore(redis, scripts)
    fold = RollupFold(scripts)
    metering = Metering(
        clients.hot,
        Scripts(clients.hot),
        reservation_timeout=60,
        record_ttl_seconds=30 * 86_400,
        batcher=clients.batcher,
        lease_above_per_second=lease_above,
    )
    now = time.time()
    owners = []
    for i in range(accounts):
        account = await store.create_account(f"bench-{i}", GRANT, now)
        _, key = await store.create_key(account.id, "k", now)
        owners.append((account.id, key.hash))
    ids = [new_generation_id(owners[i % accounts][0]) for i in range(requests)]
    leases: list[LeaseTicket | None] = [None] * requests

    async def admit(i: int) -> None:
        account_id, key_hash = owners[i % accounts]
        result = await metering.admit(
            account_id, key_hash, ids[i], 300_000, paid=True, now=time.time(), leasable=True
        )
        leases[i] = result.lease

    async def settle(i: int) -> None:
        account_id, key_hash = owners[i % accounts]
        record, now = realistic_record(account_id, key_hash, ids[i]), time.time()
        reply = await metering.send_settlement(record, now, lease=leases[i])
        metering.settled(record, reply, now, leases[i])

    async def fold_all() -> None:
        for account_id, _ in owners:
            await fold.fold(account_id)

    phases: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("admission", lambda: _in_turns(requests, in_flight, admit)),
        ("settlement", lambda: _in_turns(requests, in_flight, settle)),
        ("rollup fold", fold_all),
    ]
    total_cpu = 0.0
    print(
        f"{requests} requests on {accounts} account(s), {in_flight} in flight, leases "
        + (f"above {lease_above:g}/s an account" if lease_above else "off")
    )
    for name, run in phases:
        before, cpu0 = await _commandstats(redis), cpu_seconds(pid)
        await run()
        after, cpu1 = await _commandstats(redis), cpu_seconds(pid)
        total_cpu += cpu1 - cpu0
        scripted = {
            command: (
                after[command][0] - before.get(command, (0, 0))[0],
                after[command][1] - before.get(command, (0, 0))[1],
            )
            for command in after
            if after[command] != before.get(command)
        }
        counted = sum(usec for command, (_, usec) in scripted.items() if command.startswith("eval"))
        plain = sum(usec for c, (_, usec) in scripted.items() if c in ("xrange", "get"))
        if detail:
            for command, (calls, usec) in sorted(scripted.items(), key=lambda c: -c[1][1]):
                share = f"{calls / requests:5.2f} a request, {usec / requests:5.1f} µs"
                print(f"      {command:<14} {share}")
        print(
            f"  {name:<12} process CPU {(cpu1 - cpu0) * 1e6 / requests:6.1f} µs a request; "
            f"scripts {counted / requests:6.1f} µs (commandstats), plain commands "
            f"{plain / requests:5.1f} µs"
        )
    print(f"  total        process CPU {total_cpu * 1e6 / requests:6.1f} µs a request")
    print(f"  admitted from leases: {sum(1 for t in leases if t is not None)} of {requests}")
    await metering.leases.close(time.time())
    await clients.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--accounts", type=int, default=1)
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--detail", action="store_true", help="every command's share")
    parser.add_argument(
        "--lease-above", type=float, default=100.0, help="requests a second; 0: no leases"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        server = RedisServer(Path(data), port=free_port()).start()
        try:
            assert server.process is not None
            asyncio.run(
                measure(
                    args.requests,
                    args.accounts,
                    args.in_flight,
                    server.process.pid,
                    server.url,
                    args.detail,
                    args.lease_above,
                )
            )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
