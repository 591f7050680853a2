"""Optional profiling (`python -m bench.run --profile`): py-spy samples the gateway during an
extra load run, after the measured ones so it never skews the table, and the raw collapsed
stacks are summarised here as the top functions by own time and by total time.

Usage on a saved file: python -m bench.profile FILE.txt [--top 15]
"""

import argparse
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


class ProfileFailed(RuntimeError):
    pass


def py_spy_path() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def start_recording(pid: int, seconds: float, out: Path) -> "subprocess.Popen[bytes]":
    """py-spy record, flat raw (collapsed stacks, one "frame;frame;... count" per line)."""
    py_spy = py_spy_path()
    if py_spy is None:
        raise ProfileFailed("py-spy is not installed (pip install py-spy)")
    cmd = [py_spy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))]
    cmd += ["--rate", "200", "--format", "raw", "--nolineno", "--subprocesses"]
    cmd += ["--output", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish_recording(proc: "subprocess.Popen[bytes]", timeout: float) -> None:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=5)
        raise ProfileFailed("py-spy did not finish in time") from None
    if proc.returncode != 0:
        raise ProfileFailed(f"py-spy failed ({proc.returncode}): {err.decode(errors='replace')}")


def _name(frame: str) -> str:
    """'handle (gateway/proxy/pipeline.py)' style, line numbers dropped so functions add up."""
    match = _FRAME.match(frame.strip())
    return f"{match['func']} ({match['file']})" if match else frame.strip()


def summarize(raw: str, top: int = 15) -> dict[str, object]:
    """Own time: samples where the function is the innermost frame. Total time: samples where it
    is anywhere on the stack (once per sample, so recursion is not counted twice)."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        # --subprocesses puts a "process <pid>:..." frame first: not a function.
        frames = [_name(f) for f in stack.split(";") if f and not f.startswith("process ")]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for name in set(frames):
            total[name] += count

    # Frames on (nearly) every stack are the entry chain (runpy, main, asyncio.run): no news.
    for name in [n for n, c in total.items() if c >= 0.99 * samples]:
        del total[name]

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(n, 100.0 * c / samples) for n, c in counter.most_common(top)] if samples else []

    return {"samples": samples, "own": share(own), "total": share(total)}


def format_summary(summary: dict[str, object]) -> str:
    lines = [f"== Gateway profile: {summary['samples']} samples (py-spy, busy time only) =="]
    for title, key in (
        ("own time", "own"),
        ("total time (inclusive, entry frames left out)", "total"),
    ):
        lines.append(f"  top by {title}:")
        rows = summary[key]
        assert isinstance(rows, list)
        for name, pct in rows:
            lines.append(f"    {pct:5.1f}%  {name}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("raw", type=Path, help="a py-spy --format raw file")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    print(format_summary(summarize(args.raw.read_text(), args.top)))


if __name__ == "__main__":
    main()
