"""Token and concurrency limits against request limits alone, in the same gateway, in turns: the
limits file is rewritten and the gateway reloads it (SIGHUP), then the gateway load run is taken
again. Issue 27 asks that token limits cost no extra round trip: each turn reports throughput and
the Redis script calls per request (admission 1, settlement at most 1: settlements of one account
in one loop turn join in one call), and the ratio of the medians shows the cost beside the noise."""

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

VARIANTS = ("requests", "tokens")  # request limits alone; then tokens and in flight as well
RELOAD_SECONDS = 10.0


def limits_ab_run(bench: "Bench", args: argparse.Namespace, use_wrk: bool) -> None:
    """`args.rounds` turns (at least two) of both variants, into `bench.results["limits_ab"]`;
    the gateway is left with the limits it started with."""
    assert bench.redis is not None and bench.gateway_pid is not None
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    try:
        for turn in range(max(args.rounds, 2)):
            for variant in VARIANTS:
                _reload(bench, variant == "tokens")
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
        _reload(bench, bool(getattr(args, "token_limits", False)))
    medians = {v: statistics.median(r["rps"] for r in runs[v]) for v in VARIANTS}
    bench.results["limits_ab"] = {
        "runs": runs,
        "median_rps": medians,
        "ratio": medians["tokens"] / medians["requests"] if medians["requests"] else 0.0,
    }


def _reload(bench: "Bench", token_limits: bool) -> None:
    """Rewrite the limits file and SIGHUP the gateway; wait until /readyz lists the limits."""
    path = bench.workdir / "limits.toml"
    limits_toml(
        path, paid_limit=bool(getattr(bench.args, "paid_limit", True)), token_limits=token_limits
    )
    assert bench.gateway_pid is not None
    os.kill(bench.gateway_pid, signal.SIGHUP)
    deadline = time.monotonic() + RELOAD_SECONDS
    while time.monotonic() < deadline:
        ready = admin_call(bench.gateway_url + "/readyz", bench.admin_token)
        if ("bench-in-flight" in ready.get("limits", [])) == token_limits:
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
        label = "requests only" if variant == "requests" else "+ tokens, in flight"
        lines.append(f"  {label:<20} req/s {rps}; script calls per request {calls}")
    lines.append(f"  median ratio, with token limits / without: {ab['ratio']:.2f}x")
    return lines
