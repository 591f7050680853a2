"""Background tasks of the app (reloads, sweeps, deliveries), started and stopped by cleanup_ctx."""

import asyncio
import contextlib
import logging

log = logging.getLogger("gateway")


async def stop_task(task: "asyncio.Task[None]", patience: float = 5.0) -> None:
    """Cancel and wait, cancelling again if the cancellation was swallowed on the way (a
    client library may turn it into its own error, which a retry loop then survives)."""
    for attempt in range(int(patience / 0.1)):
        if task.done():
            break
        if attempt:
            log.warning("a background task survived its cancellation; cancelling it again")
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    if not task.done():
        log.error("a background task did not stop within %.0f s", patience)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        if task.done():
            task.result()
