"""`python -m bench.compare BASE_DIR [CHANGED_DIR]`: two versions of the gateway side by side,
for changes too small for `make bench` to tell apart.

Each version runs from its own checkout (`git worktree add /tmp/base <commit>`, say; the changed
one defaults to this checkout), both against one Redis (a database each) and one mock provider. In
every round wrk loads both at the same moment, and each gateway's CPU time per answered request is
read from /proc: the machine's own drift (other tenants, a slower hour) hits both alike, so their
ratio holds to about 2%, where successive `make bench` runs of the same code differ by 10-20%.
Then unloaded latency, the two taking turns in blocks of requests. With --stream every request
asks for a stream (wrk reads each to its end; latency is then the time to the first byte).

Prints each round and the median ratio (changed / base; below 1 is less CPU a request).
"""

import argparse
import asyncio
import secrets
import statistics
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.latency import Target, take_turns
from bench.load import LoadReport, measure, wrk_path
from bench.procs import ROOT, Child, cpu_seconds, python_child
from bench.scenario import (
    PAID_MODEL,
    chat_body,
    create_account_and_key,
    gateway_toml,
    limits_toml,
)
from gateway.runtime.redis_server import RedisServer, free_port

NAMES = ("base", "changed")
_JSON = {"Content-Type": "application/json"}
KEY_ENV = "BENCH_PROVIDER_KEY"  # the mock's key: both versions hold a provider secret to redact


def _start(workdir: Path) -> tuple[RedisServer, Child]:
    """Redis and the mock provider, and the gateways' config files in `workdir`."""
    redis = RedisServer(workdir / "redis", port=free_port()).start()
    mock_port = free_port()
    mock = python_child(
        "mock", ["-m", "bench.mock_provider", "--port", str(mock_port)], workdir, {}
    )
    gateway_toml(workdir / "gateway.toml", f"http://127.0.0.1:{mock_port}", KEY_ENV)
    limits_toml(workdir / "limits.toml")
    return redis, mock


def _gateway(
    name: str, checkout: Path, db: int, workdir: Path, redis: RedisServer, token: str, key: str
) -> tuple[Child, str]:
    """One `gateway serve` from `checkout`, on its own Redis database: (process, base URL)."""
    port = free_port()
    serve = ["serve", "--config", str(workdir / "gateway.toml"), "--port", str(port)]
    child = python_child(
        name,
        ["-m", "gateway", *serve, "--workers", "1"],
        workdir,
        {
            "GATEWAY_REDIS_URL": redis.url.rsplit("/", 1)[0] + f"/{db}",
            "GATEWAY_ADMIN_TOKEN": token,
            KEY_ENV: key,
            "GATEWAY_LIMITS_FILE": str(workdir / "limits.toml"),
            "GATEWAY_DATA_DIR": str(workdir / f"data-{name}"),
        },
        cwd=checkout,  # `python -m gateway` imports the checkout's own packages first
    )
    return child, f"http://127.0.0.1:{port}"


def _round(
    targets: dict[str, tuple[str, str, int]],
    body: str,
    connections: int,
    seconds: float,
    use_wrk: bool,
) -> dict[str, float]:
    """Both loaded at once; name -> CPU µs per answered request."""
    before = {name: cpu_seconds(pid) for name, (_, _, pid) in targets.items()}
    with ThreadPoolExecutor(len(targets)) as pool:
        runs = {
            name: pool.submit(
                measure,
                url,
                body,
                auth,
                connections=connections,
                duration=seconds,
                warmup=0,
                use_wrk=use_wrk,
            )
            for name, (url, auth, _) in targets.items()
        }
        reports: dict[str, LoadReport] = {name: run.result()[1] for name, run in runs.items()}
    result = {}
    for name, (_, _, pid) in targets.items():
        report = reports[name]
        answered = report.requests - report.non2xx
        if answered <= 0 or report.errors:
            raise SystemExit(f"{name}: {report.non2xx} non-2xx, {report.errors} errors")
        result[name] = (cpu_seconds(pid) - before[name]) * 1e6 / answered
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("base", type=Path, help="checkout of the version to compare against")
    parser.add_argument("changed", type=Path, nargs="?", default=ROOT, help="default: this one")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=6.0, help="per round")
    parser.add_argument("--connections", type=int, default=16, help="per gateway")
    parser.add_argument("--latency", type=int, default=300, help="unloaded requests each")
    parser.add_argument("--stream", action="store_true", help="streaming requests throughout")
    parser.add_argument(
        "--load-tool",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="wrk (make bench installs it), our Python load generator, or wrk when on PATH",
    )
    args = parser.parse_args(argv)
    use_wrk = args.load_tool == "wrk" or (args.load_tool == "auto" and wrk_path() is not None)
    if use_wrk and wrk_path() is None:
        print("wrk is not on PATH (make bench installs it)", file=sys.stderr)
        return 2
    token = secrets.token_urlsafe(24)
    provider_key = secrets.token_hex(20)  # 40 characters
    with tempfile.TemporaryDirectory(prefix="gateway-compare-") as tmp:
        workdir = Path(tmp)
        redis, mock = _start(workdir)
        children = [mock]
        try:
            checkouts = (args.base.resolve(), args.changed.resolve())
            targets: dict[str, tuple[str, str, int]] = {}
            for db, (name, checkout) in enumerate(zip(NAMES, checkouts, strict=True)):
                child, url = _gateway(name, checkout, db, workdir, redis, token, provider_key)
                children.append(child)
                child.wait_http(url + "/readyz", timeout=60)
                _, key = create_account_and_key(url, token)
                targets[name] = (url + "/api/v1/chat/completions", f"Bearer {key}", child.pid)
            body = chat_body(PAID_MODEL, **({"stream": True} if args.stream else {})).decode()
            _round(targets, body, args.connections, 2.0, use_wrk)  # warm-up
            ratios = []
            for n in range(1, args.rounds + 1):
                cpu = _round(targets, body, args.connections, args.seconds, use_wrk)
                ratios.append(cpu["changed"] / cpu["base"])
                print(
                    f"round {n}: base {cpu['base']:.0f} µs/request, changed "
                    f"{cpu['changed']:.0f} µs/request, changed/base {ratios[-1]:.3f}",
                    flush=True,
                )
            print(f"CPU per request, changed/base: median {statistics.median(ratios):.3f}")
            plain = {
                name: Target(url, body.encode(), {"Authorization": auth, **_JSON})
                for name, (url, auth, _) in targets.items()
            }
            turns = take_turns(plain, count=args.latency, warmup=50, streaming=args.stream)
            seq = asyncio.run(turns)
            print(
                ("unloaded time to first byte p50: " if args.stream else "unloaded p50: ")
                + ", ".join(f"{name} {report.p50_ms:.3f} ms" for name, report in seq.items())
                + f", changed/base {seq['changed'].p50_ms / seq['base'].p50_ms:.3f}"
            )
        finally:
            for child in children:
                child.stop()
            redis.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
