"""`make bench`: the mock provider, a bare aiohttp proxy and the gateway, measured side by side in
one run on this machine, so the gateway's cost reads as a ratio to the floor any aiohttp proxy
hits, not as a number that depends on the machine.

Starts Redis (the project's launcher, AOF everysec like the embedded default), the mock provider,
the bare proxy and `gateway serve` (each its own process), then measures unloaded latency,
streaming time to first byte and throughput under load; prints a table and writes
bench/results/<timestamp>.json. Every process it starts is stopped on the way out, Ctrl-C and
SIGTERM included.
"""

import argparse
import contextlib
import secrets
import signal
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from types import FrameType
from typing import Any

from bench import cluster_bench, load, new_event_loop, profile
from bench.latency import Target, take_turns
from bench.limits_ab import format_limits_ab, limits_ab_run
from bench.procs import ROOT, Child, CpuMeter, python_child
from bench.report import (
    RESULTS_DIR,
    format_table,
    machine_info,
    redis_server_info,
    script_calls,
    write_json,
)
from bench.scenario import (
    API_BODIES,
    PAID_MODEL,
    UPSTREAM_MODEL,
    admin_call,
    chat_body,
    create_account_and_key,
    gateway_toml,
    limits_toml,
    one_request_cost,
)
from bench.spread import format_spread, spread_run
from gateway.runtime.redis_server import RedisServer, free_port


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


class Bench:
    """The processes of one run and what was measured; `stop()` ends them all."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.redis: RedisServer | None = None
        self.children: list[Child] = []
        self.admin_token = secrets.token_urlsafe(24)
        self.results: dict[str, Any] = {}
        self.cost = Decimal(0)
        self.client_counted = 0

    def start(self) -> None:
        log("starting Redis (AOF everysec), mock provider, bare proxy, gateway")
        port = None if self.args.redis_socket == "unix" else free_port()
        self.redis = RedisServer(self.workdir / "redis", port=port).start()
        mock_port, bare_port, gateway_port = free_port(), free_port(), free_port()
        self.mock_url = f"http://127.0.0.1:{mock_port}"
        self.bare_url = f"http://127.0.0.1:{bare_port}"
        self.gateway_url = f"http://127.0.0.1:{gateway_port}"
        mock = self._child("mock", ["-m", "bench.mock_provider", "--port", str(mock_port)])
        bare = self._child(
            "bare",
            ["-m", "bench.bare_proxy", "--port", str(bare_port), "--upstream", self.mock_url],
        )
        toml = gateway_toml(self.workdir / "gateway.toml", self.mock_url, every_api=True)
        serve = ["serve", "--config", str(toml), "--port", str(gateway_port)]
        gateway = self._child(
            "gateway",
            ["-m", "gateway", *serve, "--workers", str(self.args.gateway_workers)],
            {
                "GATEWAY_REDIS_URL": self.redis.url,
                "GATEWAY_ADMIN_TOKEN": self.admin_token,
                "GATEWAY_LIMITS_FILE": str(
                    limits_toml(
                        self.workdir / "limits.toml",
                        paid_limit=getattr(self.args, "paid_limit", True),
                        token_limits=getattr(self.args, "token_limits", False),
                        in_flight=getattr(self.args, "in_flight_limits", False),
                    )
                ),
                **dict(item.split("=", 1) for item in self.args.gateway_env),
            },
            cwd=self.workdir,  # so no stray .env file (read from the working directory) applies
        )
        mock.wait_http(self.mock_url + "/_sim/stats")
        bare.wait_http(self.bare_url + "/healthz")
        gateway.wait_http(self.gateway_url + "/readyz", timeout=60)
        self.gateway_pid = gateway.pid
        log(f"gateway pid {gateway.pid} on {self.gateway_url}")
        self.account_id, key = create_account_and_key(self.gateway_url, self.admin_token)
        self.auth = f"Bearer {key}"

    def _child(
        self, name: str, args: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT
    ) -> Child:
        child = python_child(name, args, self.workdir, env or {}, cwd)
        self.children.append(child)
        return child

    def targets(self) -> dict[str, tuple[str, str, str]]:
        """name -> (url, model, Authorization header)."""
        return {
            "mock": (self.mock_url + "/v1/chat/completions", UPSTREAM_MODEL, ""),
            "bare": (self.bare_url + "/api/v1/chat/completions", UPSTREAM_MODEL, ""),
            "gateway": (self.gateway_url + "/api/v1/chat/completions", PAID_MODEL, self.auth),
        }

    async def latency(self) -> None:
        """Unloaded latency for every target, streaming TTFB for the two proxies."""
        a = self.args
        plain: dict[str, Target] = {}
        streams: dict[str, Target] = {}
        for name, (url, model, auth) in self.targets().items():
            headers = {"Content-Type": "application/json"}
            if auth:
                headers["Authorization"] = auth
            plain[name] = Target(url, chat_body(model), headers)
            if name != "mock":
                streams[name] = Target(url, chat_body(model, stream=True), headers)
        gateway = plain["gateway"]
        self.cost = await one_request_cost(gateway.url, gateway.body, gateway.headers)
        log(f"unloaded latency: {a.sequential} requests to each of {', '.join(plain)}, in turns")
        seq = await take_turns(
            plain, count=a.sequential, warmup=a.sequential_warmup, streaming=False
        )
        log(f"streaming time to first byte: {a.ttfb} requests to each of {', '.join(streams)}")
        first = await take_turns(streams, count=a.ttfb, warmup=a.ttfb_warmup, streaming=True)
        unloaded: dict[str, Any] = {name: r.as_dict() for name, r in seq.items()}
        ttfb: dict[str, Any] = {name: r.as_dict() for name, r in first.items()}
        gateway_p50 = unloaded["gateway"]["p50_ms"]
        unloaded["gateway_added_p50_ms"] = gateway_p50 - unloaded["mock"]["p50_ms"]
        unloaded["gateway_added_vs_bare_p50_ms"] = gateway_p50 - unloaded["bare"]["p50_ms"]
        ttfb["gateway_added_p50_ms"] = ttfb["gateway"]["p50_ms"] - ttfb["bare"]["p50_ms"]
        self.results["unloaded"], self.results["ttfb"] = unloaded, ttfb
        self.client_counted += 1 + a.sequential + a.sequential_warmup + a.ttfb + a.ttfb_warmup

    def throughput(self, use_wrk: bool) -> None:
        """`--rounds` times the three load runs, in turns; the table shows the round with the
        median gateway/floor ratio, and every round's ratio (this VM's noise is that large)."""
        rounds = [self._load_round(use_wrk, n) for n in range(self.args.rounds)]
        ratios = [
            r["gateway"]["rps"] / r["bare"]["rps"] if r["bare"]["rps"] else 0.0 for r in rounds
        ]
        middle = sorted(range(len(rounds)), key=ratios.__getitem__)[(len(rounds) - 1) // 2]
        self.results["load"] = rounds[middle]
        self.results["throughput_ratio"] = ratios[middle]
        if len(rounds) > 1:
            self.results["load_rounds"] = rounds
            self.results["throughput_ratios"] = ratios

    def _load_round(self, use_wrk: bool, number: int) -> dict[str, Any]:
        a = self.args
        reports: dict[str, Any] = {}
        assert self.redis is not None and self.redis.process is not None
        pids = {child.name: child.pid for child in self.children}
        pids["redis"] = self.redis.process.pid
        turn = f"round {number + 1} of {a.rounds}: " if a.rounds > 1 else ""
        for name, (url, model, auth) in self.targets().items():
            log(
                f"load: {turn}{name} ({a.warmup:g} s warm-up + {a.duration:g} s, "
                f"{a.connections} conns)"
            )
            cpu = CpuMeter(pids)
            scripts_before = script_calls(self.redis.url) if name == "gateway" else 0
            warm, report = load.measure(
                url,
                chat_body(model).decode(),
                auth,
                connections=a.connections,
                duration=a.duration,
                warmup=a.warmup,
                use_wrk=use_wrk,
                before_measured=cpu.start,
            )
            reports[name] = {**report.as_dict(), "cpu_percent": cpu.percent()}
            if name == "gateway":
                answered = 0
                for r in (warm, report):
                    if r is not None:
                        self.client_counted += r.requests - r.non2xx
                        answered += r.requests
                time.sleep(0.5)  # the last settlements
                calls = script_calls(self.redis.url) - scripts_before
                reports[name]["script_calls_per_request"] = calls / answered if answered else 0.0
        return reports

    def metering_check(self) -> None:
        """The gateway really metered: its account's usage is whole requests at the listed price,
        at least as many as the clients saw answered, and no reservation is left behind."""
        time.sleep(1.0)  # settlements of requests still in flight when the load stopped
        account = self._account()
        usage = Decimal(account["total_usage"])
        self.results["metering_check"] = {
            "total_usage": account["total_usage"],
            "reserved": account["reserved"],
            "cost_per_request": str(self.cost),
            "settled_requests": str(usage / self.cost) if self.cost else "?",
            "client_counted": self.client_counted,
        }

    def api_throughput(self, use_wrk: bool) -> None:
        """The other APIs under the same load, each against the bare proxy on the same path,
        after the metering check (their requests cost otherwise): every gateway answer is
        checked against its own cost once more at the end (`api_metering`)."""
        a = self.args
        before = Decimal(self._account()["total_usage"])
        expected = Decimal(0)
        self.results["apis"] = {}
        for api, body_of in API_BODIES.items():
            runs: dict[str, Any] = {}
            for name, url, model, auth in (
                ("bare", f"{self.bare_url}/api/v1/{api}", UPSTREAM_MODEL, ""),
                ("gateway", f"{self.gateway_url}/api/v1/{api}", PAID_MODEL, self.auth),
            ):
                log(f"load: {api} through {name} ({a.warmup:g} s warm-up + {a.duration:g} s)")
                warm, report = load.measure(
                    url,
                    body_of(model).decode(),
                    auth,
                    connections=a.connections,
                    duration=a.duration,
                    warmup=a.warmup,
                    use_wrk=use_wrk,
                )
                runs[name] = report.as_dict()
                if name == "gateway":
                    cost = self._one_cost(url, body_of(model))
                    answered = sum(r.requests - r.non2xx for r in (warm, report) if r is not None)
                    expected += cost * (answered + 1)
            bare_rps = runs["bare"]["rps"]
            runs["ratio"] = runs["gateway"]["rps"] / bare_rps if bare_rps else 0.0
            self.results["apis"][api] = runs
        time.sleep(1.0)  # settlements still in flight
        after = self._account()
        self.results["api_metering"] = {
            "charged": str(Decimal(after["total_usage"]) - before),
            "answered_at_listed_cost": str(expected),
            "reserved": after["reserved"],
        }

    def _account(self) -> dict[str, Any]:
        return admin_call(
            f"{self.gateway_url}/admin/v1/accounts/{self.account_id}", self.admin_token
        )

    def _one_cost(self, url: str, body: bytes) -> Decimal:
        headers = {"Content-Type": "application/json", "Authorization": self.auth}
        loop = new_event_loop()
        try:
            return loop.run_until_complete(one_request_cost(url, body, headers))
        finally:
            loop.close()

    def profile_gateway(self, use_wrk: bool, out: Path) -> None:
        """An extra, unreported load run on the gateway with py-spy attached."""
        url, model, auth = self.targets()["gateway"]
        seconds = self.args.duration
        log(f"profiling the gateway (pid {self.gateway_pid}) under load for {seconds:g} s")
        recorder = profile.start_recording(self.gateway_pid, seconds, out)
        time.sleep(0.3)  # let py-spy attach before the load starts
        _, report = load.measure(
            url,
            chat_body(model).decode(),
            auth,
            connections=self.args.connections,
            duration=seconds,
            warmup=0,
            use_wrk=use_wrk,
        )
        profile.finish_recording(recorder, timeout=seconds + 30)
        summary = profile.summarize(out.read_text(errors="replace"))
        self.results["profile"] = {
            "raw_file": str(out),
            "rps_under_profiler": report.rps,
            **summary,
        }

    def stop(self) -> None:
        """Stop every child (then Redis), and keep what their logs complained about."""
        for child in reversed(self.children):
            with contextlib.suppress(Exception):
                code = child.stop()
                if code not in (0, -signal.SIGTERM):
                    log(f"{child.name} exited with {code}; its log:\n{child.log_tail(15)}")
        self.results["log_problems"] = {}
        for child in self.children:
            count, first = child.problems()
            self.results["log_problems"][child.name] = {"count": count, "first": first}
        if self.redis is not None:
            with contextlib.suppress(Exception):
                self.redis.stop()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load run")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections")
    parser.add_argument("--quick", action="store_true", help="2 s runs and fewer samples (smoke)")
    parser.add_argument(
        "--load-tool",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="wrk, our Python load generator, or wrk when on PATH (default)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="then profile the gateway under load with py-spy"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="load runs of all three targets, in turns; the median round is reported",
    )
    parser.add_argument(
        "--redis-socket",
        choices=("tcp", "unix"),
        default="tcp",
        help="how the gateway reaches Redis: loopback TCP, or a unix socket as in embedded mode",
    )
    parser.add_argument(
        "--redis",
        choices=("single", "cluster"),
        default="single",
        help="cluster: one Redis against a 3-master cluster (bench/cluster_bench.py)",
    )
    cluster_bench.add_arguments(parser)
    parser.add_argument("--gateway-workers", type=int, default=1, help="gateway processes")
    parser.add_argument("--spread-accounts", type=int, default=32, help="0: no spread run")
    parser.add_argument(
        "--no-paid-limit",
        dest="paid_limit",
        action="store_false",
        help="no rate limit on paid models: a busy account's requests are admitted from leases",
    )
    parser.add_argument(
        "--no-limits-ab",
        dest="limits_ab",
        action="store_false",
        help="skip the in-turn runs with and without token and concurrency limits",
    )
    parser.add_argument(
        "--token-limits", action="store_true", help="a tokens-per-minute limit on every model too"
    )
    parser.add_argument(
        "--in-flight-limits",
        action="store_true",
        help="a requests-in-flight limit on every model too (its requests are not leased)",
    )
    parser.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the gateway, e.g. GATEWAY_LOG_LEVEL=WARNING (A/B runs)",
    )
    args = parser.parse_args(argv)
    # 1,000 sequential requests a target: p50s of 300 moved by ±50 µs from run to run here.
    args.warmup, args.sequential, args.sequential_warmup = 2.0, 1000, 50
    args.ttfb, args.ttfb_warmup = 100, 10
    if args.quick:
        args.duration, args.warmup = 2.0, 1.0
        args.sequential, args.sequential_warmup, args.ttfb, args.ttfb_warmup = 100, 20, 30, 5
    if args.duration <= 0 or args.connections <= 0 or args.rounds <= 0:
        parser.error("--duration, --connections and --rounds must be positive")
    return args


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: a background job inherits it ignored
        signal.signal(sig, _raise_interrupt)
    if args.redis == "cluster":
        return cluster_bench.run(args)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    wrk = load.wrk_path()
    use_wrk = args.load_tool == "wrk" or (args.load_tool == "auto" and wrk is not None)
    if not use_wrk:
        log("not using wrk: load comes from our own Python load generator (bench.loadgen)")
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        bench = Bench(args, Path(tmp))
        bench.results["settings"] = {
            "duration": args.duration,
            "warmup": args.warmup,
            "connections": args.connections,
            "quick": args.quick,
            "load_tool": "wrk" if use_wrk else "bench.loadgen",
            "sequential_warmup": args.sequential_warmup,
            "gateway_workers": args.gateway_workers,
            "rounds": args.rounds,
            "token_limits": args.token_limits,
            "in_flight_limits": args.in_flight_limits,
        }
        try:
            bench.start()
            loop = new_event_loop()
            try:
                loop.run_until_complete(bench.latency())
            finally:
                loop.close()
            bench.throughput(use_wrk)
            bench.metering_check()
            bench.api_throughput(use_wrk)
            if args.spread_accounts:
                spread_run(bench, args, use_wrk)
            if args.limits_ab:
                limits_ab_run(bench, args, use_wrk)
            assert bench.redis is not None
            redis_info = redis_server_info(bench.redis.url)
            bench.results["machine"] = machine_info(redis_info, wrk if use_wrk else None)
            if args.profile:
                RESULTS_DIR.mkdir(parents=True, exist_ok=True)
                bench.profile_gateway(use_wrk, RESULTS_DIR / f"{stamp}-gateway-profile.txt")
        except KeyboardInterrupt:
            log("interrupted: stopping everything")
            return 130
        except Exception as exc:
            log(f"failed: {type(exc).__name__}: {exc}")
            for child in bench.children:
                log(f"--- {child.name} log (last lines) ---\n{child.log_tail()}")
            return 1
        finally:
            bench.stop()
    results = {"timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **bench.results}
    print("\n".join([format_table(results), *format_spread(results), *format_limits_ab(results)]))
    if "profile" in results:
        print("\n" + profile.format_summary(results["profile"]))
    print(f"\nresults written to {write_json(results, stamp)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
