"""The open-file limit a gateway needs: every open stream holds two sockets (the client's and the
provider's), so the common default soft limit of 1,024 caps a worker near 500 streams. At start
the soft limit is raised as far as the hard limit allows (up to WANTED), and the limit in force
is logged with the streams it allows, so an operator sees the bound before a client meets it."""

import logging
import resource

log = logging.getLogger("gateway")
WANTED = 1_048_576
SOCKETS_PER_STREAM = 2
RESERVED = 64  # Redis connections, the journal, logs, the listening sockets
LOW = 4096  # below this, a warning: a few thousand streams need more


def raise_open_file_limit() -> tuple[int, int, int]:
    """The soft RLIMIT_NOFILE raised to the hard one (at most WANTED); returns the soft limit
    found, the soft limit now in force and the hard limit (unlimited shown as WANTED)."""
    found, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    shown = [WANTED if limit == resource.RLIM_INFINITY else limit for limit in (found, hard)]
    soft, ceiling = shown[0], min(shown[1], WANTED)
    if soft < ceiling:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
            soft = ceiling
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d: %s", soft, exc)
    return shown[0], soft, shown[1]


def describe_open_file_limit(limits: tuple[int, int, int]) -> None:
    found, soft, hard = limits
    streams = max(soft - RESERVED, 0) // SOCKETS_PER_STREAM
    message = (
        "open files: at most %d per process, about %d concurrent streams per worker "
        "(soft limit %d at start, hard limit %d)"
    )
    if soft < LOW:
        log.warning(
            message + "; raise the hard limit (ulimit -Hn, LimitNOFILE=) for more",
            soft,
            streams,
            found,
            hard,
        )
    else:
        log.info(message, soft, streams, found, hard)
