"""Token and concurrency limits against request limits alone, in the same gateway, in turns: the
limits file is rewritten and the gateway reloads it (SIGHUP), then the gateway load run is taken
again. Issue 27 asks that token limits cost no extra round trip: each turn reports throughput and
the Redis script calls per request (the bench's one account is busy: its requests are admitted
from leases, and its settlements of one loop turn join in one call), and the ratio of the
medians shows the cost beside the noise. A limit on requests in flight is measured too: its
requests are not leased, so it costs a busy account one admission round trip a request."""

import argparse
import os
import signal
import statistics
import sys
import time
from typing import TYPE_CHECKING, Any

from bench import load
from bench.report import script_calls
from bench.scenario import PAID_MODEL, admin_call, chat_body, limits_toml

if TYPE_CHECKING:
    from bench.run import Bench

VARIANTS = ("requests", "tokens", "in_flight")  # request limits alone; + tokens; + in flight
LABELS = {"requests": "requests only", "tokens": "+ tokens", "in_flight": "+ in flight"}
RELOAD_SECONDS = 10.0


def limits_ab_run(bench: "Bench", args: argparse.Namespace, use_wrk: bool) -> None:
    """`args.rounds` turns (at least two) of both variants, into `bench.results["limits_ab"]`;
    the gateway is left with the limits it started with."""
    assert bench.redis is not None and bench.gateway_pid is not None
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    try:
        for turn in range(max(args.rounds, 2)):
            for variant in VARIANTS:
                _reload(bench, variant)
                print(
                    f"[bench] load: gateway, limits A/B turn {turn + 1}, {variant}",
                    file=sys.stderr,
                    flush=True,
                )
                before = script_calls(bench.redis.url)
                warm, report = load.measure(
                    bench.gateway_url + "/api/v1/chat/completions",
                    chat_body(PAID_MODEL).decode(),
                    bench.auth,
                    connections=args.connections,
                    duration=args.duration,
                    warmup=args.warmup,
                    use_wrk=use_wrk,
                )
                time.sleep(0.5)  # the last settlements
                answered = sum(r.requests for r in (warm, report) if r is not None)
                calls = script_calls(bench.redis.url) - before
                runs[variant].append(
                    {
                        "rps": report.rps,
                        "non2xx": report.non2xx,
                        "script_calls_per_request": calls / answered if answered else 0.0,
                    }
                )
    finally:
        _reload(bench, "")
    medians = {v: statistics.median(r["rps"] for r in runs[v]) for v in VARIANTS}
    bench.results["limits_ab"] = {
        "runs": runs,
        "median_rps": medians,
        "ratios": {
            v: medians[v] / medians["requests"] if medians["requests"] else 0.0 for v in VARIANTS
        },
    }


def _reload(bench: "Bench", variant: str) -> None:
    """Rewrite the limits file for `variant` ('': as the run started) and SIGHUP the gateway;
    wait until /readyz lists the limits."""
    args = bench.args
    tokens = variant == "tokens" or (not variant and bool(getattr(args, "token_limits", False)))
    in_flight = variant == "in_flight" or (
        not variant and bool(getattr(args, "in_flight_limits", False))
    )
    paid_limit = bool(getattr(args, "paid_limit", True))
    path = limits_toml(
        bench.workdir / "limits.toml",
        paid_limit=paid_limit,
        token_limits=tokens,
        in_flight=in_flight,
    )
    names = {
        line.split('"')[1] for line in path.read_text().splitlines() if line.startswith("name")
    }
    assert bench.gateway_pid is not None
    os.kill(bench.gateway_pid, signal.SIGHUP)
    deadline = time.monotonic() + RELOAD_SECONDS
    while time.monotonic() < deadline:
        if set(admin_call(bench.gateway_url + "/readyz", bench.admin_token)["limits"]) == names:
            return
        time.sleep(0.1)
    raise RuntimeError("the gateway did not reload its limits file")


def format_limits_ab(results: dict[str, Any]) -> list[str]:
    ab = results.get("limits_ab")
    if not ab:
        return []
    lines = [
        "",
        "== Token and concurrency limits against request limits alone (same gateway, in turns, "
        "reloaded by SIGHUP) ==",
    ]
    for variant in VARIANTS:
        runs = ab["runs"][variant]
        rps = ", ".join(f"{r['rps']:.0f}" for r in runs)
        calls = ", ".join(f"{r['script_calls_per_request']:.2f}" for r in runs)
        ratio = ab["ratios"][variant]
        lines.append(
            f"  {LABELS[variant]:<15} req/s {rps}; script calls per request {calls}; "
            f"median against requests only {ratio:.2f}x"
        )
    return lines
