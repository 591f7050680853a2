"""Run a command and end it when our parent process is gone (for systems without PDEATHSIG).

Usage: python -m gateway.runtime.orphan_guard PARENT_PID -- COMMAND...
"""

import os
import signal
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    parent = int(argv[0])
    command = argv[argv.index("--") + 1 :]
    child = subprocess.Popen(command)

    def forward(signum: int, _frame: object) -> None:
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while child.poll() is None:
        if os.getppid() != parent:
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
            break
        time.sleep(0.5)
    return child.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
