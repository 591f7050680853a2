"""The shared bound on providers' whole answers (gateway/proxy/forward/deadlines.py): a task past
its deadline is cancelled by the sweep and can tell that cancellation from any other; one that
finished in time, or was forgotten, is left alone."""

import asyncio

import pytest

from gateway.proxy.forward.deadlines import AnswerDeadlines


async def _answer(deadlines: AnswerDeadlines, seconds: float) -> str:
    deadlines.watch()
    try:
        await asyncio.sleep(seconds)
        return "answered"
    except asyncio.CancelledError:
        if deadlines.took_too_long():
            return "took too long"
        raise
    finally:
        deadlines.forget()


async def test_only_what_is_past_its_deadline_is_cut_off() -> None:
    deadlines = AnswerDeadlines(0.2)  # swept every 0.05 s
    deadlines.start()
    try:
        slow = asyncio.create_task(_answer(deadlines, 5))
        quick = asyncio.create_task(_answer(deadlines, 0.05))
        assert await asyncio.wait_for(slow, 2) == "took too long"
        assert await quick == "answered"
        assert slow.cancelling() == 0  # the deadline's cancellation was undone
        # Another cancellation (a client gone) stays a cancellation.
        gone = asyncio.create_task(_answer(deadlines, 5))
        await asyncio.sleep(0.01)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
    finally:
        await deadlines.stop()


async def test_no_bound_means_no_sweeper_and_no_deadline() -> None:
    deadlines = AnswerDeadlines(None)
    deadlines.start()
    assert deadlines.watch() is None
    assert await _answer(deadlines, 0.01) == "answered"
    await deadlines.stop()


async def test_a_shutdown_that_lands_with_the_deadline_is_not_swallowed() -> None:
    """The deadline and another cancellation hit the task in the same turn: the other one
    must still propagate, not become a timeout."""
    deadlines = AnswerDeadlines(0.2)
    deadlines.start()
    try:
        task = asyncio.create_task(_answer(deadlines, 5))
        await asyncio.sleep(0.01)
        deadlines._expired.add(task)  # as the sweep does, in the same turn as the shutdown
        task.cancel()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await deadlines.stop()
