"""The benchmark's child processes: started so they die with the benchmark even if it is killed
outright (PR_SET_PDEATHSIG on Linux) and stay out of the terminal's Ctrl-C (own process group),
so the orchestrator alone decides how they stop: terminate, wait, kill after a timeout.
"""

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PR_SET_PDEATHSIG = 1


def _detach() -> None:
    """Runs in the child between fork and exec."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    os.setpgrp()


class Child:
    """One named child process, its stdout and stderr in a log file."""

    def __init__(
        self, name: str, cmd: list[str], log_path: Path, env: dict[str, str], cwd: Path = ROOT
    ) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("wb")
        # No GATEWAY_* from the caller's environment: they outrank the gateway's own command
        # line flags, and the run must not depend on who starts it.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        self.proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env={**inherited, **env},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_detach,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def problems(self, limit: int = 5) -> tuple[int, list[str]]:
        """(count, first few) of the log's warning, error and traceback lines."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return 0, []
        found = [
            line
            for line in text.splitlines()
            if " WARNING " in line or " ERROR " in line or line.startswith("Traceback")
        ]
        return len(found), found[:limit]

    def wait_http(self, url: str, timeout: float = 30.0) -> None:
        """Poll `url` until it answers 200; fail early, with the log, if the child exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not answer {url} within {timeout:.0f}s")

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait, SIGKILL if it will not go; returns the exit code."""
        proc = self.proc
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
        self._log.close()
        return proc.returncode


def python_child(
    name: str, args: list[str], log_dir: Path, env: dict[str, str], cwd: Path = ROOT
) -> Child:
    """`python -m ...` with this interpreter (the venv's)."""
    return Child(name, [sys.executable, *args], log_dir / f"{name}.log", env, cwd)


def cpu_seconds(pid: int, depth: int = 0) -> float:
    """User + system CPU seconds a process and its live child processes (a multi-worker
    gateway's workers) have used so far; 0.0 where /proc cannot tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # the name in parentheses may contain spaces
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    if depth < 3:
        for children in Path(f"/proc/{pid}/task").glob("*/children"):
            with contextlib.suppress(OSError, ValueError):
                for child in children.read_text().split():
                    total += cpu_seconds(int(child), depth + 1)
    return total


class CpuMeter:
    """How busy each process was between `start()` and `percent()`, in % of one core: shows
    which process is the bottleneck (a single-process server saturates at 100)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._started = time.monotonic()
        self._base = {name: 0.0 for name in pids}

    def start(self) -> None:
        self._started = time.monotonic()
        self._base = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def percent(self) -> dict[str, float]:
        elapsed = max(time.monotonic() - self._started, 1e-9)
        return {
            name: round(100 * (cpu_seconds(pid) - self._base[name]) / elapsed, 1)
            for name, pid in self.pids.items()
        }
