"""`make bench BENCH_ARGS="--redis cluster"`: the gateway on one Redis and on a Redis Cluster
(three masters, a replica each), side by side in one run, under the same load.

One account is one slot, so the load is spread over many accounts (`--accounts`, 48 by default):
wrk takes their keys in turn. Each round loads the single-Redis gateway, then the cluster's, and
reads every process's CPU time: the gateway's and each Redis node's CPU per answered request give
the capacity model (requests a second per Redis core, per gateway core), and how the cluster's
Redis work spreads over its masters says what one more shard buys. On a 2-vCPU machine everything
shares two cores, so the throughputs say little; CPU per request is what carries over.

Prints a table and writes bench/results/<timestamp>-cluster.json.
"""

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from redis.crc import key_slot

from bench import load
from bench.cluster import LocalCluster
from bench.procs import ROOT, Child, CpuMeter, python_child
from bench.report import RESULTS_DIR, write_json
from bench.scenario import PAID_MODEL, admin_call, chat_body, gateway_toml, limits_toml
from gateway.runtime.redis_server import RedisServer, free_port
from metering.layout import AccountKeys


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


class Side:
    """One gateway and its store, and the keys of its accounts."""

    def __init__(self, name: str, gateway: Child, url: str, redis_pids: dict[str, int]) -> None:
        self.name, self.gateway, self.url, self.redis_pids = name, gateway, url, redis_pids
        self.auths: list[str] = []
        self.accounts: list[str] = []


def _serve(
    name: str, workdir: Path, redis_url: str, mock_url: str, token: str
) -> tuple[Child, str]:
    port = free_port()
    toml = gateway_toml(workdir / f"{name}.toml", mock_url)
    child = python_child(
        name,
        ["-m", "gateway", "serve", "--config", str(toml), "--port", str(port)],
        workdir,
        {
            "GATEWAY_REDIS_URL": redis_url,
            "GATEWAY_ADMIN_TOKEN": token,
            "GATEWAY_LIMITS_FILE": str(limits_toml(workdir / "limits.toml")),
            "GATEWAY_DATA_DIR": str(workdir / f"data-{name}"),
        },
        cwd=workdir,
    )
    url = f"http://127.0.0.1:{port}"
    child.wait_http(url + "/readyz", timeout=60)
    return child, url


def _accounts(side: Side, count: int, token: str) -> None:
    for n in range(count):
        account = admin_call(
            side.url + "/admin/v1/accounts", token, {"name": f"b{n}", "grant": "100000"}
        )
        key = admin_call(f"{side.url}/admin/v1/accounts/{account['id']}/keys", token, {"name": "k"})
        side.accounts.append(account["id"])
        side.auths.append(f"Bearer {key['key']}")


def _round(side: Side, args: argparse.Namespace, use_wrk: bool) -> dict[str, Any]:
    pids = {"gateway": side.gateway.pid, **side.redis_pids}
    cpu = CpuMeter(pids)
    started: list[float] = []

    def begin() -> None:
        started.append(time.monotonic())
        cpu.start()

    _, report = load.measure(
        side.url + "/api/v1/chat/completions",
        chat_body(PAID_MODEL).decode(),
        "|".join(side.auths),
        connections=args.connections,
        duration=args.duration,
        warmup=args.warmup,
        use_wrk=use_wrk,
        before_measured=begin,
    )
    percent = cpu.percent()
    seconds = time.monotonic() - started[0]
    answered = max(report.requests - report.non2xx, 1)
    per_request = {name: p / 100 * seconds / answered * 1e6 for name, p in percent.items()}
    return {
        "rps": report.rps,
        "non2xx": report.non2xx,
        "cpu_percent": percent,
        "cpu_us_per_request": {k: round(v, 1) for k, v in per_request.items()},
    }


def run(args: argparse.Namespace) -> int:
    use_wrk = args.load_tool == "wrk" or (args.load_tool == "auto" and load.wrk_path() is not None)
    token = "bench-" + str(time.time_ns())
    children: list[Child] = []
    with tempfile.TemporaryDirectory(prefix="gateway-bench-cluster-") as tmp:
        workdir = Path(tmp)
        single = RedisServer(workdir / "single", port=free_port()).start()
        cluster = LocalCluster(workdir / "cluster")
        try:
            log("starting one Redis, a cluster (3 masters, 3 replicas), the mock, two gateways")
            cluster.start()
            mock_port = free_port()
            mock = python_child(
                "mock", ["-m", "bench.mock_provider", "--port", str(mock_port)], workdir, {}, ROOT
            )
            children.append(mock)
            mock_url = f"http://127.0.0.1:{mock_port}"
            mock.wait_http(mock_url + "/_sim/stats")
            sides = []
            for name, url, nodes in (
                ("single", single.url, {"redis": single}),
                ("cluster", cluster.url, {f"node-{n.port}": n for n in cluster.nodes}),
            ):
                child, base = _serve(f"gateway-{name}", workdir, url, mock_url, token)
                children.append(child)
                pids = {k: n.process.pid for k, n in nodes.items() if n.process is not None}
                side = Side(name, child, base, pids)
                _accounts(side, args.accounts, token)
                sides.append(side)
            masters = {n.port: f"node-{n.port}" for n in cluster.masters_now()}
            spread = Counter(
                masters[cluster.master_of_slot(key_slot(AccountKeys(a).account.encode())).port]
                for a in sides[1].accounts
            )
            log(f"cluster accounts per master: {dict(spread)}")
            rounds: dict[str, list[dict[str, Any]]] = {s.name: [] for s in sides}
            for n in range(args.rounds):
                for side in sides:
                    log(f"load: round {n + 1} of {args.rounds}: {side.name}")
                    rounds[side.name].append(_round(side, args, use_wrk))
        finally:
            for child in reversed(children):
                child.stop()
            cluster.stop()
            single.stop()
    results = _summary(rounds, masters, spread, args)
    print(_table(results))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    print(
        f"\nresults written to {write_json(results, time.strftime('%Y%m%d-%H%M%S') + '-cluster')}"
    )
    return 0


def _summary(
    rounds: dict[str, list[dict[str, Any]]],
    masters: dict[int, str],
    spread: Counter[str],
    args: argparse.Namespace,
) -> dict[str, Any]:
    def median(side: str, pick: Any) -> float:
        return float(statistics.median(pick(r) for r in rounds[side]))

    cluster_nodes = rounds["cluster"][0]["cpu_us_per_request"].keys() - {"gateway"}
    node_us = {
        n: median("cluster", lambda r, n=n: r["cpu_us_per_request"][n]) for n in cluster_nodes
    }
    master_us = sum(us for n, us in node_us.items() if n in masters.values())
    replica_us = sum(us for n, us in node_us.items() if n not in masters.values())
    single_redis = median("single", lambda r: r["cpu_us_per_request"]["redis"])
    return {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": vars(args),
        "accounts_per_master": dict(spread),
        "rounds": rounds,
        "single": {
            "rps": median("single", lambda r: r["rps"]),
            "gateway_us": median("single", lambda r: r["cpu_us_per_request"]["gateway"]),
            "redis_us": single_redis,
        },
        "cluster": {
            "rps": median("cluster", lambda r: r["rps"]),
            "gateway_us": median("cluster", lambda r: r["cpu_us_per_request"]["gateway"]),
            "masters_us": master_us,
            "replicas_us": replica_us,
            "node_us": node_us,
            "busiest_master_us": max(us for n, us in node_us.items() if n in masters.values()),
        },
    }


def _table(r: dict[str, Any]) -> str:
    s, c = r["single"], r["cluster"]
    lines = [
        "",
        f"== One Redis against a 3-master cluster, {r['settings']['accounts']} accounts, "
        f"{r['settings']['connections']} connections, "
        f"median of {r['settings']['rounds']} rounds ==",
        f"{'':28}{'one Redis':>14}{'cluster':>14}",
        f"{'requests/s':28}{s['rps']:>14.0f}{c['rps']:>14.0f}",
        f"{'gateway CPU µs/request':28}{s['gateway_us']:>14.1f}{c['gateway_us']:>14.1f}",
        f"{'Redis CPU µs/request':28}{s['redis_us']:>14.1f}{c['masters_us']:>14.1f}  (masters)",
        f"{'':28}{'':>14}{c['replicas_us']:>14.1f}  (replicas)",
        f"{'busiest master µs/request':28}{'':>14}{c['busiest_master_us']:>14.1f}",
        f"accounts per master: {r['accounts_per_master']}",
        "",
        "Capacity, from CPU per request (one core each):",
        f"  one Redis:   {1e6 / max(s['redis_us'], 1e-9):,.0f} metered requests/s",
        f"  the cluster: {1e6 / max(c['busiest_master_us'], 1e-9):,.0f} requests/s before its "
        "busiest master is full (load spread evenly: x3 with three masters)",
        f"  one gateway core: {1e6 / max(s['gateway_us'], 1e-9):,.0f} requests/s on one Redis, "
        f"{1e6 / max(c['gateway_us'], 1e-9):,.0f} on the cluster",
    ]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--accounts", type=int, default=48, help="accounts the load is spread over")
