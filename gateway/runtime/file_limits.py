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


def raise_open_file_limit() -> int:
    """The soft RLIMIT_NOFILE raised to the hard one (at most WANTED); returns the soft limit
    now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = WANTED if hard == resource.RLIM_INFINITY else min(hard, WANTED)
    if soft == resource.RLIM_INFINITY or soft >= ceiling:
        return soft if soft != resource.RLIM_INFINITY else WANTED
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
        soft = ceiling
    except (ValueError, OSError) as exc:
        log.warning("could not raise the open-file limit from %d: %s", soft, exc)
    return soft


def describe_open_file_limit(soft: int) -> None:
    streams = max(soft - RESERVED, 0) // SOCKETS_PER_STREAM
    message = "open files: at most %d per process, about %d concurrent streams per worker"
    if soft < LOW:
        log.warning(
            message + "; raise the hard limit (ulimit -Hn, LimitNOFILE=) for more", soft, streams
        )
    else:
        log.info(message, soft, streams)
