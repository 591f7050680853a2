"""UTC period stamps for per-key usage (daily, weekly from Monday, monthly) and RFC 3339 times.

Both run on every settlement, so each remembers its last answer: the stamps change once a day and
the time text once a millisecond.
"""

from datetime import UTC, datetime, timedelta

SECONDS_PER_DAY = 86_400
_stamps: tuple[int, tuple[str, str, str]] = (-1, ("", "", ""))


def period_stamps(now: float) -> tuple[str, str, str]:
    """(day, week, month) stamps; a counter restarts when its stamp changes."""
    global _stamps
    day = int(now // SECONDS_PER_DAY)
    if _stamps[0] != day:
        t = datetime.fromtimestamp(day * SECONDS_PER_DAY, UTC)
        monday = (t - timedelta(days=t.weekday())).date()
        _stamps = (day, (t.strftime("%Y%m%d"), monday.strftime("%Y%m%d"), t.strftime("%Y%m")))
    return _stamps[1]


_second: tuple[int, str] = (-1, "")


def rfc3339(now: float) -> str:
    """2026-11-27T15:24:55.123Z (UTC, milliseconds)."""
    global _second
    whole = int(now // 1)
    if _second[0] != whole:
        _second = (whole, datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    millis = int((now - whole) * 1000)
    return f"{_second[1]}.{millis:03d}Z"
