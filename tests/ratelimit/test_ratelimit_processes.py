"""Several gateway processes on one Redis enforce one limit; SIGHUP reloads the limits file and
the catalog."""

import json
import signal
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.runtime.redis_server import free_port
from tests.processes import answers, gateway_process, http_json, stop, wait_until
from tests.support import ADMIN_TOKEN, ThreadedServer

LIMITS = textwrap.dedent("""\
    [[limits]]
    name = "free-per-day"
    description = "Free model daily limit of {limit}"
    match = "free"
    unit = "day"
    requests = 5
    """)


def _call(url: str, body: Any = None, token: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    status, data = http_json(url, None if body is None else json.dumps(body).encode(), headers)
    return status, data


@pytest.fixture
def two_gateways(
    tmp_path: Path, redis_url: str, provider: ThreadedServer
) -> Iterator[tuple[list[str], Path, list[Any]]]:
    config = tmp_path / "gateway.toml"
    config.write_text(
        textwrap.dedent(f"""
        [[providers]]
        name = "sim"
        base_url = "{provider.url}/v1"

        [[models]]
        id = "test/free:free"
        provider = "sim"
        upstream_model = "sim-free"
        """)
    )
    limits = tmp_path / "limits.toml"
    limits.write_text(LIMITS)
    env = {
        "GATEWAY_REDIS_URL": redis_url,
        "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN,
        "GATEWAY_LIMITS_FILE": str(limits),
        "GATEWAY_LIMITS_RELOAD_SECONDS": "3600",
    }
    ports = [free_port(), free_port()]
    procs = [
        gateway_process(["serve", "--config", str(config), "--port", str(p)], env) for p in ports
    ]
    bases = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        for base in bases:
            assert wait_until(lambda b=base: answers(b + "/readyz"), 20), "gateway did not start"
        yield bases, limits, procs
    finally:
        for proc in procs:
            stop(proc)


def _account(base: str) -> str:
    status, account = _call(base + "/admin/v1/accounts", {"name": "two"}, ADMIN_TOKEN)
    assert status == 201
    status, key = _call(
        f"{base}/admin/v1/accounts/{account['id']}/keys", {"name": "k"}, ADMIN_TOKEN
    )
    assert status == 201
    return str(key["key"])


def _free(base: str, key: str) -> int:
    body = {"model": "test/free:free", "messages": [{"role": "user", "content": "hi"}]}
    return _call(base + "/api/v1/chat/completions", body, key)[0]


def test_two_processes_share_one_limit(two_gateways: tuple[list[str], Path, list[Any]]) -> None:
    bases, _, _ = two_gateways
    key = _account(bases[0])
    statuses = [_free(bases[i % 2], key) for i in range(10)]
    assert statuses.count(200) == 5 and statuses.count(429) == 5
    assert statuses[:5] == [200] * 5


def test_sighup_reloads_the_file(two_gateways: tuple[list[str], Path, list[Any]]) -> None:
    bases, limits, procs = two_gateways
    key = _account(bases[0])
    assert [_free(bases[0], key) for _ in range(6)] == [200] * 5 + [429]
    limits.write_text(LIMITS.replace("requests = 5", "requests = 7"))
    procs[0].send_signal(signal.SIGHUP)
    assert wait_until(
        lambda: (
            _call(bases[0] + "/readyz")[1]["limits"] == ["free-per-day"]
            and _free(bases[0], key) == 200
        ),
        10,
    )
    assert _free(bases[0], key) == 200  # the 7th
    assert _free(bases[1], key) == 429  # the other process was not told, and keeps 5
    limits.write_text("[[limits]]\nthis is broken\n")
    procs[0].send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert _free(bases[0], key) == 429  # 7 used of 7 under the previous, still valid limits
    stop(procs[0])
    assert "rate-limit file refused" in (procs[0].stderr.read() if procs[0].stderr else "")


def test_sighup_reloads_the_catalog_too(
    two_gateways: tuple[list[str], Path, list[Any]], tmp_path: Path
) -> None:
    bases, _, procs = two_gateways
    config = tmp_path / "gateway.toml"
    added = '\n[[models]]\nid = "test/other:free"\nprovider = "sim"\nupstream_model = "sim-free"\n'
    config.write_text(config.read_text() + added)
    procs[0].send_signal(signal.SIGHUP)

    def models(base: str) -> set[str]:
        return {m["id"] for m in _call(base + "/api/v1/models")[1]["data"]}

    assert wait_until(lambda: "test/other:free" in models(bases[0]), 10)
    assert models(bases[1]) == {"test/free:free"}  # not told, and its watch is an hour apart
    key = _account(bases[0])
    body = {"model": "test/other:free", "messages": [{"role": "user", "content": "hi"}]}
    assert _call(bases[0] + "/api/v1/chat/completions", body, key)[0] == 200
    config.write_text(config.read_text().replace('provider = "sim"', 'provider = "nobody"'))
    procs[0].send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert "test/other:free" in models(bases[0])  # the bad file was refused
    stop(procs[0])
    err = procs[0].stderr.read() if procs[0].stderr else ""
    assert "catalog refused" in err and "unknown provider 'nobody'" in err


def test_check_config_reports_a_bad_limits_file(tmp_path: Path) -> None:
    bad = tmp_path / "limits.toml"
    bad.write_text(LIMITS.replace('unit = "day"', 'unit = "week"'))
    proc = gateway_process(["check-config", str(bad)], {})
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert err.startswith(f"{bad}:5: limits.0.unit: Input should be")
    bad.write_text(LIMITS)
    proc = gateway_process(["check-config", str(bad)], {})
    proc.communicate(timeout=20)
    assert proc.returncode == 0


def test_serve_refuses_to_start_with_a_bad_limits_file(tmp_path: Path, redis_url: str) -> None:
    bad = tmp_path / "limits.toml"
    bad.write_text(LIMITS.replace("requests = 5", "requests = -5"))
    proc = gateway_process(
        ["serve", "--port", str(free_port())],
        {"GATEWAY_LIMITS_FILE": str(bad), "GATEWAY_REDIS_URL": redis_url},
    )
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert f"{bad}:6: limits.0.requests" in err
