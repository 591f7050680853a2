"""Redis killed with SIGKILL under load, again and again: after each crash, nothing may stay
reserved once Redis answers again, and the books must agree with every client.

Each round: 32 clients (half of them streaming, a fifth on a free model, a few hanging up early)
for a few seconds; Redis (AOF, `appendfsync always`) is SIGKILLed mid-load and started again on
its append-only file. An admission whose reply was lost with the crash was answered 503 and will
never settle, although Redis may have kept its reservation: the gateway gives it back once Redis
answers (journal_replay_seconds). The round measures how long after the last client's answer the
account's `reserved` reached zero, with the reservation timeout at its 900 s default (nothing
expires by itself within a round). At the end the purchase is refunded: no `in_flight` refusal.

    python -m bench.crash_loop --kills 30       # `make soak` runs this after the soak
Prints one line a round and a JSON summary; exits 1 when any check fails.
"""

import argparse
import asyncio
import secrets
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import orjson

from bench import new_event_loop
from bench.audit import problems, read_books
from bench.scenario import admin_call
from bench.stack import FREE_MODELS, PAID_MODELS, Stack
from bench.traffic import Mix, Outcome, Traffic

RETURN_BOUND_SECONDS = 10.0  # how long a round waits for `reserved` to reach zero
JOURNAL_REPLAY_SECONDS = 0.5


@dataclass
class CrashReport:
    kills: int = 0
    answered: int = 0
    refused_503: int = 0
    returned_after: list[float] = field(default_factory=list)  # seconds, per round
    refund_status: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def crash_stack(workdir: Path) -> Stack:
    """Redis with `appendfsync always` (no acknowledged write is lost with the process), and
    the gateway's default reservation timeout."""
    return Stack(
        workdir,
        appendfsync="always",
        gateway_env={"GATEWAY_JOURNAL_REPLAY_SECONDS": str(JOURNAL_REPLAY_SECONDS)},
    )


async def _reserved_and_ready(stack: Stack, account_id: str) -> tuple[int, str] | None:
    """(status of /readyz, the account's `reserved`), None when the gateway did not answer."""
    admin = {"Authorization": f"Bearer {stack.admin_token}"}
    timeout = aiohttp.ClientTimeout(total=2)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(stack.url + "/readyz") as resp:
                ready = resp.status
            url = f"{stack.url}/admin/v1/accounts/{account_id}"
            async with session.get(url, headers=admin) as resp:
                if resp.status != 200:
                    return ready, "unknown"
                return ready, str((await resp.json())["reserved"])
    except (aiohttp.ClientError, TimeoutError):
        return None


async def crash_round(
    stack: Stack, account_id: str, key: str, seed: int
) -> tuple[list[Outcome], float | None]:
    """One kill under load (Redis is back about 1.5 s before the load ends); returns the
    outcomes and the seconds from the last client's answer to nothing reserved (None: not
    within RETURN_BOUND_SECONDS)."""
    mix = Mix(
        paid_models=PAID_MODELS,
        free_models=FREE_MODELS,
        free_share=0.2,
        stream_share=0.5,
        hang_up_share=0.05,
    )
    traffic = Traffic(stack.url, key, mix, concurrency=32, seed=seed, request_timeout=15.0)
    load = asyncio.create_task(traffic.run(3.0))
    await asyncio.sleep(1.0 + (seed % 5) * 0.1)
    await asyncio.to_thread(stack.kill_redis)
    await asyncio.sleep(0.3)
    await asyncio.to_thread(stack.redis.start)
    outcomes = await load
    ended = time.monotonic()
    deadline = ended + RETURN_BOUND_SECONDS
    while time.monotonic() < deadline:
        state = await _reserved_and_ready(stack, account_id)
        if state is not None and state[0] == 200 and state[1] in ("0", "0.00"):
            return outcomes, time.monotonic() - ended
        await asyncio.sleep(0.05)
    return outcomes, None


async def crash_loop(workdir: Path, kills: int, report: CrashReport) -> None:
    stack = crash_stack(workdir).start()
    try:
        account = admin_call(stack.url + "/admin/v1/accounts", stack.admin_token, {"name": "c"})
        account_id = account["id"]
        purchase = admin_call(
            f"{stack.url}/admin/v1/accounts/{account_id}/purchases",
            stack.admin_token,
            {"amount": "20.00", "method": "card", "idempotency_key": secrets.token_hex(8)},
        )
        key = admin_call(
            f"{stack.url}/admin/v1/accounts/{account_id}/keys", stack.admin_token, {"name": "k"}
        )["key"]
        everything: list[Outcome] = []
        for round_ in range(kills):
            outcomes, returned = await crash_round(stack, account_id, key, seed=round_)
            everything += outcomes
            report.kills += 1
            answered = sum(o.status == 200 for o in outcomes)
            refused = sum(o.status == 503 for o in outcomes)
            report.answered += answered
            report.refused_503 += refused
            shown = "NOT RETURNED" if returned is None else f"{returned:.2f} s"
            print(
                f"kill {round_ + 1}: {answered} answered, {refused} refused (503), "
                f"nothing reserved {shown} after the last answer",
                flush=True,
            )
            if returned is None:
                report.problems.append(f"kill {round_ + 1}: still reserved after the bound")
                break
            report.returned_after.append(returned)
        books = await read_books(stack.url, stack.admin_token, account_id, key)
        report.problems += problems(books, everything)
        status, _ = await _refund(stack, str(purchase["id"]))
        report.refund_status = status
        if status != 200:
            report.problems.append(f"the refund after the crashes answered {status}")
    finally:
        stack.stop()


async def _refund(stack: Stack, purchase_id: str) -> tuple[int, dict[str, object]]:
    headers = {"Authorization": f"Bearer {stack.admin_token}"}
    url = f"{stack.url}/admin/v1/purchases/{purchase_id}/refund"
    async with aiohttp.ClientSession() as session, session.post(url, headers=headers) as resp:
        return resp.status, await resp.json()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=30)
    args = parser.parse_args(argv)
    report = CrashReport()
    with tempfile.TemporaryDirectory(prefix="gw-crash-") as workdir:
        loop = new_event_loop()
        try:
            loop.run_until_complete(crash_loop(Path(workdir), args.kills, report))
        finally:
            loop.close()
    worst = max(report.returned_after, default=0.0)
    verdict = "OK" if report.ok else "PROBLEMS: " + "; ".join(report.problems)
    print(
        f"{report.kills} kills: {report.answered} answered, {report.refused_503} refused; "
        f"nothing reserved at most {worst:.2f} s after the last answer; refund "
        f"{report.refund_status}; {verdict}"
    )
    print(orjson.dumps(asdict(report)).decode())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
