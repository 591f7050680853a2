"""The hot account against spread accounts: `make bench`'s gateway run puts all its load on one
account (one slot, one master on a cluster); this run puts the same load on `--spread-accounts`
accounts, their keys taken in turn, and reads the same CPU figures. A hot account's
settlements of one loop turn join in one script call (metering/transport/settle_merge.py);
spread accounts' do not, so the two differ in Redis CPU a request, and issue 21 asks that the
hot account stay within 10% of the spread accounts' throughput."""

import argparse
import sys
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from bench import load
from bench.procs import CpuMeter
from bench.report import cpu_per_request
from bench.scenario import PAID_MODEL, admin_call, chat_body, create_account_and_key

if TYPE_CHECKING:
    from bench.run import Bench


def spread_run(bench: "Bench", args: argparse.Namespace, use_wrk: bool) -> None:
    """One load run on `--spread-accounts` fresh accounts, into `bench.results["spread"]`,
    with what they were charged and hold reserved after it."""
    accounts = args.spread_accounts
    print(f"[bench] load: gateway, spread over {accounts} accounts", file=sys.stderr, flush=True)
    made = [create_account_and_key(bench.gateway_url, bench.admin_token) for _ in range(accounts)]
    auth = "|".join(f"Bearer {key}" for _, key in made)
    pids = {child.name: child.pid for child in bench.children}
    assert bench.redis is not None and bench.redis.process is not None
    pids["redis"] = bench.redis.process.pid
    cpu = CpuMeter(pids)
    _, report = load.measure(
        bench.gateway_url + "/api/v1/chat/completions",
        chat_body(PAID_MODEL).decode(),
        auth,
        connections=args.connections,
        duration=args.duration,
        warmup=args.warmup,
        use_wrk=use_wrk,
        before_measured=cpu.start,
    )
    time.sleep(1.0)  # settlements of requests still in flight when the load stopped
    states = [
        admin_call(f"{bench.gateway_url}/admin/v1/accounts/{account_id}", bench.admin_token)
        for account_id, _ in made
    ]
    bench.results["spread"] = {
        **report.as_dict(),
        "accounts": accounts,
        "cpu_percent": cpu.percent(),
        "reserved_after": str(sum(Decimal(s["reserved"]) for s in states)),
    }


def format_spread(results: dict[str, Any]) -> list[str]:
    spread = results.get("spread")
    hot = results.get("load", {}).get("gateway")
    if not spread or not hot:
        return []
    hot_cpu, spread_cpu = cpu_per_request(hot), cpu_per_request(spread)
    ratio = hot["rps"] / spread["rps"] if spread["rps"] else 0.0
    lines = [
        f"hot account against {spread['accounts']} accounts: {hot['rps']:.0f} req/s against "
        f"{spread['rps']:.0f} req/s ({ratio:.2f}x; non-2xx {spread['non2xx']}, errors "
        f"{spread['errors']}; reserved after: ${spread['reserved_after']})"
    ]
    if hot_cpu and spread_cpu:
        lines.append(
            f"  CPU per request, hot / spread: gateway {hot_cpu['gateway']:.0f} / "
            f"{spread_cpu['gateway']:.0f} µs, Redis {hot_cpu['redis']:.0f} / "
            f"{spread_cpu['redis']:.0f} µs"
        )
    return lines
