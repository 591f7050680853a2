"""The command line as users run it: serve with the embedded Redis, demo, check-config."""

import json
import resource
import signal
import subprocess
import textwrap
import time
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.runtime.redis_server import free_port
from tests.processes import (
    answers,
    gateway_process,
    http_json,
    paid_model_config,
    pids_with,
    stop,
    wait_until,
)
from tests.support import ThreadedServer


def _get(
    url: str, headers: dict[str, str] | None = None, data: bytes | None = None
) -> tuple[int, Any]:
    return http_json(url, data, headers)


def test_serve_starts_embedded_redis_and_stops_it(tmp_path: Path, provider: ThreadedServer) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    proc = gateway_process(
        ["serve", "--config", str(paid_model_config(tmp_path, provider.url)), "--port", str(port)],
        # --port wins over GATEWAY_PORT
        {"GATEWAY_DATA_DIR": str(data_dir), "GATEWAY_ADMIN_TOKEN": "", "GATEWAY_PORT": "1"},
    )
    try:
        assert wait_until(lambda: answers(f"http://127.0.0.1:{port}/readyz"), 20), "no start"
        status, models = _get(f"http://127.0.0.1:{port}/api/v1/models")
        assert status == 200 and models["data"][0]["id"] == "test/paid"
        status, body = _get(f"http://127.0.0.1:{port}/admin/v1/accounts", data=b"{}")
        assert status == 403 and "GATEWAY_ADMIN_TOKEN" in body["error"]["message"]
        assert pids_with(str(data_dir / "redis.sock"))
    finally:
        code = stop(proc, signal.SIGTERM)
    err = proc.stderr.read() if proc.stderr else ""
    assert code == 0, err
    assert "admin API is off" in err
    assert wait_until(lambda: not pids_with(str(data_dir / "redis.sock")), 10)
    assert (data_dir / "appendonlydir").exists()


def test_sigkill_of_serve_leaves_no_redis_behind(tmp_path: Path, provider: ThreadedServer) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    proc = gateway_process(
        ["serve", "--config", str(paid_model_config(tmp_path, provider.url)), "--port", str(port)],
        {"GATEWAY_DATA_DIR": str(data_dir)},
    )
    try:
        assert wait_until(lambda: answers(f"http://127.0.0.1:{port}/healthz"), 20)
        assert pids_with(str(data_dir / "redis.sock"))
    finally:
        stop(proc, signal.SIGKILL)
    assert wait_until(lambda: not pids_with(str(data_dir / "redis.sock")), 10)


def _curl_lines(banner: str) -> list[str]:
    """The banner's curl commands, each with its continuation lines joined."""
    commands, current = [], ""
    for line in banner.splitlines():
        text = line.strip()
        if ":" in text and "curl -s" in text and not current:
            text = text[text.index("curl -s") :]
        if current or text.startswith("curl -s"):
            current += " " + text.removesuffix("\\").strip()
            if not text.endswith("\\"):
                commands.append(current.strip())
                current = ""
    return commands


def test_demo_answers_its_own_curl_lines() -> None:
    """Every API's line the demo prints answers with its exact cost, and the credits add up."""
    port = free_port()
    proc = gateway_process(["demo", "--port", str(port)], {})
    try:
        assert proc.stdout is not None
        lines = []
        for _ in range(60):
            line = proc.stdout.readline()
            lines.append(line)
            if line.strip().startswith("Stop it with"):
                break
        text = "".join(lines)
        assert "SIMULATED" in text
        key = next(ln.split()[-1] for ln in lines if ln.strip().startswith("API key:"))
        calls = [c for c in _curl_lines(text) if " -d " in c]
        paths = [c.split()[2].split(str(port))[1] for c in calls]
        assert paths == [
            "/api/v1/chat/completions",
            "/api/v1/embeddings",
            "/api/v1/responses",
            "/v1/messages",
        ]
        costs = []
        for command in calls:
            done = subprocess.run(
                ["bash", "-c", command], capture_output=True, timeout=20, check=True
            )
            reply = json.loads(done.stdout)
            assert reply["usage"]["cost"] > 0, reply
            costs.append(Decimal(str(reply["usage"]["cost"])))
        status, credits = _get(
            f"http://127.0.0.1:{port}/api/v1/credits", {"Authorization": f"Bearer {key}"}
        )
        assert status == 200 and Decimal(str(credits["data"]["total_usage"])) == sum(costs)
    finally:
        assert stop(proc, signal.SIGINT) == 0


def _banner(proc: "subprocess.Popen[str]") -> list[str]:
    assert proc.stdout is not None
    lines = []
    for _ in range(60):
        lines.append(proc.stdout.readline())
        if lines[-1].strip().startswith("Stop it with"):
            break
    return lines


def test_the_demo_payment_side_takes_a_purchase_and_its_refund() -> None:
    """`make run`'s Credits flow over HTTP, as the page drives it: add credits, pending, paid on
    the simulated payment side's page, landed; then refunded, and the payment side told."""
    port = free_port()
    proc = gateway_process(["demo", "--port", str(port)], {})
    try:
        lines = _banner(proc)
        manager = next(ln.split()[-1] for ln in lines if "Management key:" in ln)
        assert any(f"http://127.0.0.1:{port}/credits" in ln for ln in lines)
        base = f"http://127.0.0.1:{port}/api/v1/credits"
        auth = {"Authorization": f"Bearer {manager}", "Content-Type": "application/json"}
        status, opened = _get(f"{base}/checkout", auth, b'{"amount": "5.00", "method": "card"}')
        assert status == 201 and opened["data"]["status"] == "pending"
        pay_url = opened["data"]["checkout_url"]
        with urllib.request.urlopen(pay_url, timeout=10) as page:
            assert "Pay $5.80" in page.read().decode()
        paid = urllib.request.Request(pay_url, data=b"action=pay")
        with urllib.request.urlopen(paid, timeout=10) as page:
            assert "The gateway answered 200" in page.read().decode()
        _, summary = _get(f"{base}/summary", auth)
        assert summary["data"]["balance"] == "15.00"  # the demo's $10 and these $5
        _, rows = _get(f"{base}/purchases", auth)
        row = next(r for r in rows["data"] if r["checkout_id"] == opened["data"]["id"])
        assert row["status"] == "completed"
        status, refund = _get(f"{base}/purchases/{row['id']}/refund", auth, b"")
        assert status == 200 and refund["data"]["refunded"] == "5.00"
        assert wait_until(lambda: _get(f"{base}/summary", auth)[1]["data"]["balance"] == "10.00", 5)
        time.sleep(3)  # the outbox delivers the refund request within a poll or two
    finally:
        assert stop(proc, signal.SIGINT) == 0
    _, err = proc.communicate(timeout=10)
    assert "refund.requested" in err and f"{manager}" not in err


def test_check_config_lists_every_problem_with_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        textwrap.dedent("""\
        [[providers]]
        name = "sim"
        base_url = "http://127.0.0.1:1/v1"

        [[models]]
        id = "a/one"
        provider = "sim"
        [models.pricing]
        prompt = 0.1
        completion = "0.2"

        [[models]]
        id = "a/two"
        provider = "nobody"
    """)
    )
    proc = gateway_process(["check-config", str(bad)], {})
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    lines = err.strip().splitlines()
    assert f"{bad}:9: models.0.pricing.prompt: must be a decimal string" in lines[0]
    assert len(lines) == 1  # the price problem stops validation before cross-references
    bad.write_text(bad.read_text().replace("prompt = 0.1", 'prompt = "0.1"'))
    proc = gateway_process(["check-config", str(bad)], {})
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert err.strip() == f"{bad}:14: unknown provider 'nobody'"


def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    proc = gateway_process(
        ["check-config", str(paid_model_config(tmp_path, "http://127.0.0.1:1"))], {}
    )
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0 and out.startswith("ok")


def test_every_command_has_help() -> None:
    for args in (["--help"], ["serve", "--help"], ["demo", "--help"], ["check-config", "--help"]):
        proc = gateway_process(args, {})
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0 and "usage: gateway" in out


def test_the_shipped_example_config_is_valid() -> None:
    example = Path(__file__).parent.parent.parent / "examples" / "gateway.toml"
    proc = gateway_process(["check-config", str(example)], {})
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err


def test_serve_with_two_workers_shares_one_port(tmp_path: Path, provider: ThreadedServer) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    proc = gateway_process(
        [
            "serve",
            "--config",
            str(paid_model_config(tmp_path, provider.url)),
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        {"GATEWAY_DATA_DIR": str(data_dir)},
    )
    try:
        assert wait_until(lambda: answers(f"http://127.0.0.1:{port}/readyz"), 30)
        pids: set[int] = set()

        def both_workers_answered() -> bool:
            status, body = _get(f"http://127.0.0.1:{port}/healthz")
            assert status == 200
            pids.add(body["pid"])
            return len(pids) == 2

        assert wait_until(both_workers_answered, 30), pids
    finally:
        code = stop(proc, signal.SIGTERM)
    err = proc.stderr.read() if proc.stderr else ""
    assert code == 0, err
    assert err.count("gateway listening on") == 2
    assert wait_until(lambda: not pids_with(str(data_dir / "redis.sock")), 10)


def _metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_two_workers_add_up_in_one_scrape(tmp_path: Path, provider: ThreadedServer) -> None:
    port = free_port()
    proc = gateway_process(
        [
            "serve",
            "--config",
            str(paid_model_config(tmp_path, provider.url)),
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        {"GATEWAY_DATA_DIR": str(tmp_path / "data"), "GATEWAY_ADMIN_TOKEN": "t0ken"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_until(lambda: answers(base + "/readyz"), 30)
        pids: set[int] = set()
        assert wait_until(lambda: pids.add(_get(base + "/healthz")[1]["pid"]) or len(pids) == 2, 30)
        admin = {"Authorization": "Bearer t0ken", "Content-Type": "application/json"}
        _, account = _get(base + "/admin/v1/accounts", admin, b'{"grant": "1.00"}')
        _, key = _get(f"{base}/admin/v1/accounts/{account['id']}/keys", admin, b"{}")
        body = json.dumps(
            {"model": "test/paid", "messages": [{"role": "user", "content": "hi"}]}
        ).encode()
        for _ in range(20):  # new connections: the kernel spreads them over both workers
            status, reply = _get(
                base + "/api/v1/chat/completions",
                {"Authorization": f"Bearer {key['key']}", "Content-Type": "application/json"},
                body,
            )
            assert status == 200, reply
        scrape = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
        assert _metric(scrape, "gateway_requests_total") == 20
        assert _metric(scrape, "gateway_tokens_total") > 0
        assert _metric(scrape, "gateway_spend_usd_total") > 0
        assert "gateway_build_info" in scrape
    finally:
        assert stop(proc, signal.SIGTERM) == 0


def test_metrics_on_their_own_port(tmp_path: Path, provider: ThreadedServer) -> None:
    port, metrics_port = free_port(), free_port()
    proc = gateway_process(
        ["serve", "--config", str(paid_model_config(tmp_path, provider.url)), "--port", str(port)],
        {"GATEWAY_DATA_DIR": str(tmp_path / "data"), "GATEWAY_METRICS_PORT": str(metrics_port)},
    )
    try:
        assert wait_until(lambda: answers(f"http://127.0.0.1:{port}/readyz"), 20)
        scrape = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
        assert b"gateway_build_info" in scrape.read()
        assert _get(f"http://127.0.0.1:{port}/metrics")[0] == 404
    finally:
        assert stop(proc, signal.SIGTERM) == 0


def test_a_misspelt_variable_is_refused_by_check_config_and_named_by_serve(
    tmp_path: Path, provider: ThreadedServer
) -> None:
    config = paid_model_config(tmp_path, provider.url)
    typo = {"GATEWAY_REFUND_WINDOW_HOUR": "1"}
    proc = gateway_process(["check-config", str(config)], typo)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert err.strip() == (
        "environment: GATEWAY_REFUND_WINDOW_HOUR is not a setting; "
        "did you mean GATEWAY_REFUND_WINDOW_HOURS?"
    )
    port = free_port()
    proc = gateway_process(
        ["serve", "--config", str(config), "--port", str(port)],
        {**typo, "GATEWAY_DATA_DIR": str(tmp_path / "data"), "GATEWAY_LOG_FORMAT": "text"},
    )
    try:
        assert wait_until(lambda: answers(f"http://127.0.0.1:{port}/readyz"), 20), "no start"
    finally:
        stop(proc, signal.SIGTERM)
    err = proc.stderr.read() if proc.stderr else ""
    named = [line for line in err.splitlines() if "GATEWAY_REFUND_WINDOW_HOUR" in line]
    assert len(named) == 1 and "GATEWAY_REFUND_WINDOW_HOURS" in named[0], err
    assert "warning" in named[0].lower()


def test_kubernetes_service_links_are_ignored(tmp_path: Path) -> None:
    """A service named `gateway` gives every pod GATEWAY_PORT=tcp://...: not the port to listen
    on, and no reason to refuse the configuration."""
    links = {
        "GATEWAY_PORT": "tcp://10.0.0.7:8080",
        "GATEWAY_SERVICE_HOST": "10.0.0.7",
        "GATEWAY_PORT_8080_TCP_ADDR": "10.0.0.7",
    }
    config = paid_model_config(tmp_path, "http://127.0.0.1:1")
    proc = gateway_process(["check-config", str(config)], links)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and out.startswith("ok"), err
    notes = err.strip().splitlines()
    assert len(notes) == 3 and all("Kubernetes service link" in n for n in notes), err


def test_unusable_redis_urls_and_bad_files_are_one_line_and_exit_2(tmp_path: Path) -> None:
    config = paid_model_config(tmp_path, "http://127.0.0.1:1")
    bad_file = tmp_path / "bad.toml"
    bad_file.write_text(config.read_text() + "\nport = 'eighty'\n")
    cases = [
        ({"GATEWAY_REDIS_URL": "redis+foo://127.0.0.1:7100"}, config, "GATEWAY_REDIS_URL"),
        ({"GATEWAY_REDIS_URL": "redis://:pw-secret@127.0.0.1:99999/0"}, config, "port"),
        ({"GATEWAY_REDIS_URL": "redis+cluster://127.0.0.1:7100/3"}, config, "database 0"),
        ({"GATEWAY_REDIS_URL": "redis://127.0.0.1:6379/zero"}, config, "database"),
        ({"GATEWAY_REDIS_URL": "rediss+cluster://h:1?ssl_ca_certs=/no/ca.pem"}, config, "no such"),
        (
            {"GATEWAY_REDIS_URL": "rediss+cluster://h:1?ssl_ca_cert=/ca.pem"},
            config,
            "'ssl_ca_cert'",
        ),
        ({}, bad_file, f"{bad_file}:"),
    ]
    for env, path, culprit in cases:
        for command in (["check-config", str(path)], ["serve", "--config", str(path)]):
            proc = gateway_process(command, {"GATEWAY_DATA_DIR": str(tmp_path / "d"), **env})
            _, err = proc.communicate(timeout=20)
            assert proc.returncode == 2, (command, env, err)
            lines = err.strip().splitlines()
            assert len(lines) == 1 and culprit in lines[0], (command, env, err)
            assert "Traceback" not in err and "pw-secret" not in err


def _low_file_limit() -> None:
    """In the child before it runs: the soft limit many systems start a service with."""
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    )


def test_serve_raises_its_open_file_limit_and_says_what_it_allows(
    tmp_path: Path, provider: ThreadedServer
) -> None:
    """Every stream holds two sockets: with the common soft limit of 1,024 a worker would stop near
    500 streams. `serve` raises it to the hard limit and logs the streams it allows."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard <= 1024:
        pytest.skip("the hard open-file limit here is 1,024 or less: nothing to raise")
    port = free_port()
    proc = gateway_process(
        ["serve", "--config", str(paid_model_config(tmp_path, provider.url)), "--port", str(port)],
        {"GATEWAY_DATA_DIR": str(tmp_path / "data")},
        preexec_fn=_low_file_limit,
    )
    try:
        assert wait_until(lambda: answers(f"http://127.0.0.1:{port}/readyz"), 20), "no start"
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        line = next(ln for ln in limits.splitlines() if ln.startswith("Max open files"))
        soft = int(line.split()[3])
        assert soft > 1024 and soft == min(hard, 1_048_576)
    finally:
        stop(proc, signal.SIGTERM)
    err = proc.stderr.read() if proc.stderr else ""
    assert f"open files: at most {soft} per process, about {(soft - 64) // 2}" in err
    shown_hard = 1_048_576 if hard == resource.RLIM_INFINITY else hard
    assert f"(soft limit 1024 at start, hard limit {shown_hard})" in err
