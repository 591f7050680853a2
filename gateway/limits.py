"""The rate-limit policy in force, and its reload: on SIGHUP and when the file changes on disk
(gateway.tasks.reloads).

A bad file is refused with one log line and the previous limits stay in force. The admission
script takes the limits as arguments, so a reload needs no script change.
"""

import logging
from pathlib import Path

from aiohttp import web

from config.errors import ConfigError
from config.limits import load_limits
from gateway.tasks.watched_file import WatchedFile
from ratelimit.policy import Policy

log = logging.getLogger("gateway.limits")


class LimitsHolder(WatchedFile):
    def __init__(self, path: Path | None) -> None:
        super().__init__(path)
        self.policy = Policy(load_limits(path))  # a bad file at start-up is a ConfigError

    def reload(self) -> bool:
        """Load the file again; keep the limits in force when it is bad. True when replaced."""
        self.read_now()
        try:
            policy = Policy(load_limits(self.path))
        except ConfigError as exc:
            problems = "; ".join(str(p) for p in exc.problems)
            log.error("rate-limit file refused, previous limits stay in force: %s", problems)
            return False
        self.policy = policy
        names = ", ".join(c.name for c in policy.limits) or "none"
        log.info("rate limits loaded from %s: %s", self.path or "the shipped default", names)
        return True


LIMITS = web.AppKey("limits", LimitsHolder)
