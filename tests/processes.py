"""Helpers for tests that run the gateway as a real process."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


def pids_with(fragment: str) -> list[int]:
    """Processes whose command line contains `fragment`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if fragment in cmdline and int(entry.name) != os.getpid():
            found.append(int(entry.name))
    return found


def wait_until(predicate: "callable[[], bool]", timeout: float = 10.0) -> bool:  # type: ignore[valid-type]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def gateway_process(args: list[str], env: dict[str, str], **kw: object) -> "subprocess.Popen[str]":
    full_env = {**os.environ, **env}
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", *args],
        env=full_env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kw,
    )  # type: ignore[call-overload]


def stop(proc: "subprocess.Popen[str]", sig: int = signal.SIGTERM) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(5)


def http_json(
    url: str, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """A blocking request to a gateway process: (status, parsed JSON body), errors included."""
    request = urllib.request.Request(url, headers=headers or {}, data=data)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def answers(url: str) -> bool:
    """The URL answers 200 (a gateway process is up)."""
    try:
        return http_json(url)[0] == 200
    except OSError:
        return False


def paid_model_config(tmp_path: Path, provider_url: str) -> Path:
    """A gateway TOML with the simulated provider and one paid model, test/paid."""
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'[[providers]]\nname = "sim"\nbase_url = "{provider_url}/v1"\n\n'
        '[[models]]\nid = "test/paid"\nprovider = "sim"\nupstream_model = "sim-gpt"\n'
        '[models.pricing]\nprompt = "0.00000015"\ncompletion = "0.0000006"\n'
    )
    return path
