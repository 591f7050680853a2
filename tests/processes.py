"""Helpers for tests that run the gateway as a real process."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


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
