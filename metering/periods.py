"""UTC period stamps for per-key usage (daily, weekly from Monday, monthly) and RFC 3339 times."""

from datetime import UTC, datetime, timedelta


def period_stamps(now: float) -> tuple[str, str, str]:
    """(day, week, month) stamps; a counter restarts when its stamp changes."""
    t = datetime.fromtimestamp(now, UTC)
    monday = (t - timedelta(days=t.weekday())).date()
    return t.strftime("%Y%m%d"), monday.strftime("%Y%m%d"), t.strftime("%Y%m")


def rfc3339(now: float) -> str:
    t = datetime.fromtimestamp(now, UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
