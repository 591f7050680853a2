"""What the benchmark prints and keeps: the table, the machine it ran on, and the JSON copy in
bench/results/ (gitignored) so runs can be compared later."""

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson
import redis

from bench.latency import BLOCK

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TARGET_LABELS = {
    "mock": "mock provider (direct)",
    "bare": "bare aiohttp proxy (floor)",
    "gateway": "gateway (all on, limits too)",
}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def wrk_version(wrk: str | None) -> str | None:
    if wrk is None:
        return None
    done = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10)
    first = (done.stdout or done.stderr).strip().splitlines()
    return first[0] if first else "unknown"


def redis_server_info(url: str) -> dict[str, Any]:
    """INFO server of the bench's Redis: its name and version for the machine lines."""
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        info: dict[str, Any] = client.info("server")
        return info
    finally:
        client.close()


def script_calls(url: str) -> int:
    """Script calls (EVALSHA and EVAL) Redis has run since it started: the request path's round
    trips (the batcher sends each as one call; merged settlements of one account as one)."""
    import redis

    with redis.Redis.from_url(url) as client:
        stats = client.info("commandstats")
    names = ("evalsha", "eval")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in names)


def machine_info(redis_info: dict[str, Any], wrk: str | None) -> dict[str, Any]:
    server = "valkey" if "valkey_version" in redis_info else "redis"
    version = redis_info.get("valkey_version") or redis_info.get("redis_version", "?")
    return {
        "nproc": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis_server": f"{server} {version}",
        "aiohttp": _version("aiohttp"),
        "uvloop": _version("uvloop"),
        "redis_py": _version("redis"),
        "wrk": wrk_version(wrk),
    }


def _row(cells: list[str], widths: list[int]) -> str:
    first, *rest = cells
    return "  ".join(
        [first.ljust(widths[0])] + [c.rjust(w) for c, w in zip(rest, widths[1:], strict=True)]
    )


def cpu_per_request(run: dict[str, Any] | None) -> dict[str, float] | None:
    """µs of each process's CPU per answered request in a load run: its busy share of one core
    over the run, divided by the requests a second answered (Redis's is what a request's
    scripts cost the store, the number that caps the metered path per Redis core)."""
    if not run or not run.get("rps"):
        return None
    return {name: pct * 10_000 / run["rps"] for name, pct in run["cpu_percent"].items()}


def format_table(results: dict[str, Any]) -> str:
    s = results["settings"]
    lines = [
        "",
        f"== Throughput: {s['connections']} connections, {s['duration']:g} s after a "
        f"{s['warmup']:g} s warm-up, load from {s['load_tool']} ==",
    ]
    if s["load_tool"] != "wrk":
        lines.append(
            "   (not wrk: our Python load generator is slower than wrk, so "
            "these req/s are lower bounds)"
        )
    widths = [31, 10, 8, 8, 9, 7]
    lines.append(_row(["target", "req/s", "p50 ms", "p99 ms", "non-2xx", "errors"], widths))
    lines.append(_row(["-" * w for w in widths], widths))
    workers = s.get("gateway_workers", 1)
    for key, label in TARGET_LABELS.items():
        if key == "gateway" and workers != 1:
            label = f"gateway, {workers} workers"
        r = results["load"].get(key)
        if r is None:
            continue
        cells = [label, f"{r['rps']:.0f}", f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}"]
        lines.append(_row([*cells, str(r["non2xx"]), str(r["errors"])], widths))
    for key, r in results["load"].items():
        if r["non2xx"] or r["errors"]:
            lines.append(
                f"WARNING: {TARGET_LABELS[key]} gave {r['non2xx']} non-2xx answers and "
                f"{r['errors']} socket errors: its req/s are not all completions"
            )
    ratio = results.get("throughput_ratio")
    if ratio is not None:
        lines.append(f"gateway / floor throughput: {ratio:.2f}x  (floor = bare aiohttp proxy)")
    ratios = results.get("throughput_ratios")
    if ratios:
        each = ", ".join(f"{r:.2f}" for r in ratios)
        lines.append(f"  each round: {each}; the table shows the median round")
    for api, runs in results.get("apis", {}).items():
        lines.append(
            f"{api}: gateway {runs['gateway']['rps']:.0f} req/s, bare proxy "
            f"{runs['bare']['rps']:.0f} req/s: {runs['ratio']:.2f}x the floor"
            f" (non-2xx {runs['gateway']['non2xx']}, errors {runs['gateway']['errors']})"
        )
    if "api_metering" in results:
        m = results["api_metering"]
        lines.append(
            f"  their charge: ${m['charged']} for ${m['answered_at_listed_cost']} answered at "
            f"the listed cost; reserved after: ${m['reserved']}"
        )
    lines += ["", "CPU of each process during each measured run, % of one core (wrk not shown):"]
    procs = list(next(iter(results["load"].values()))["cpu_percent"])
    lines.append("  " + _row(["under load", *procs], [31] + [8] * len(procs)))
    for key, r in results["load"].items():
        cells = [f"{r['cpu_percent'][p]:.0f}" for p in procs]
        lines.append("  " + _row([TARGET_LABELS[key], *cells], [31] + [8] * len(procs)))
    per_request = cpu_per_request(results["load"].get("gateway"))
    if per_request is not None:
        lines.append(
            f"  gateway run, CPU per request: gateway {per_request['gateway']:.0f} µs, "
            f"Redis {per_request['redis']:.0f} µs"
        )
    calls = results["load"].get("gateway", {}).get("script_calls_per_request")
    if calls is not None:
        kinds = ["requests"] + ["tokens"] * bool(s.get("token_limits"))
        limits = ", ".join(kinds + ["in flight"] * bool(s.get("in_flight_limits")))
        lines.append(
            f"  gateway run, Redis script calls per request: {calls:.2f} (rate limits on every "
            f"model: {limits}; at most 2: an admission and a settlement, fewer where leases "
            f"admit and settlements of one turn join)"
        )
    u = results["unloaded"]
    lines += [
        "",
        f"== Unloaded latency: {u['gateway']['requests']} sequential non-streaming requests per "
        f"target (in turns of {BLOCK}, one keep-alive connection each, after "
        f"{s['sequential_warmup']} warm-up) ==",
    ]
    for key in ("mock", "bare", "gateway"):
        r = u[key]
        lines.append(
            f"  {TARGET_LABELS[key]:<31} p50 {r['p50_ms']:.3f} ms   p99 {r['p99_ms']:.3f} ms"
        )
    lines.append(f"  gateway added p50 vs mock: {u['gateway_added_p50_ms']:+.3f} ms")
    lines.append(f"  gateway added p50 vs bare proxy: {u['gateway_added_vs_bare_p50_ms']:+.3f} ms")
    t = results["ttfb"]
    lines += [
        "",
        f"== Streaming time to first body byte: {t['gateway']['requests']} sequential "
        "streaming requests per target ==",
    ]
    for key in ("bare", "gateway"):
        r = t[key]
        lines.append(
            f"  {TARGET_LABELS[key]:<31} p50 {r['p50_ms']:.3f} ms   p99 {r['p99_ms']:.3f} ms"
        )
    lines.append(f"  gateway added TTFB p50: {t['gateway_added_p50_ms']:+.3f} ms")
    check = results.get("metering_check")
    if check:
        lines += ["", "== Metering check (gateway account after the run) =="]
        lines.append(
            f"  total_usage ${check['total_usage']}  = {check['settled_requests']} requests at "
            f"${check['cost_per_request']}; 200s counted by clients: >= {check['client_counted']}"
        )
        lines.append(f"  reserved after the run: ${check['reserved']} (should be 0)")
        problems = results.get("log_problems", {})
        quiet = [n for n, found in problems.items() if not found["count"]]
        if quiet:
            lines.append(f"  no warnings or errors in the logs of: {', '.join(quiet)}")
    for name, found in results.get("log_problems", {}).items():
        if found["count"]:
            lines.append(f"  {name} log: {found['count']} warning/error lines, first:")
            lines += [f"    {line[:160]}" for line in found["first"]]
    m = results["machine"]
    lines += [
        "",
        "== Machine ==",
        f"  nproc {m['nproc']}, CPU {m['cpu_model']}, kernel {m['kernel']}",
        f"  Python {m['python']}, aiohttp {m['aiohttp']}, uvloop {m['uvloop']}, "
        f"redis-py {m['redis_py']}, server {m['redis_server']}",
        f"  load tool: {m['wrk'] or 'bench.loadgen (Python)'}",
        "  everything (load generator, mock, proxy, gateway, Redis) shares these cores",
    ]
    return "\n".join(lines)


def write_json(results: dict[str, Any], stamp: str) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{stamp}.json"
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
    return path
