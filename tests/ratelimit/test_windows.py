from ratelimit.windows import Unit, seconds_until_reset, window_reset, window_start

T = 1_795_793_095.5  # 2026-11-27 15:24:55.5 UTC


def test_minute_window_starts_on_the_minute() -> None:
    assert window_start(Unit.MINUTE, T) == 1_795_793_040
    assert window_reset(Unit.MINUTE, T) == 1_795_793_100
    assert seconds_until_reset(Unit.MINUTE, T) == 5


def test_day_window_is_utc_midnight() -> None:
    assert window_start(Unit.DAY, T) == 1_795_737_600
    assert window_reset(Unit.DAY, T) - window_start(Unit.DAY, T) == 86_400


def test_edge_belongs_to_the_new_window() -> None:
    edge = 1_795_824_000.0  # 2026-11-28 00:00:00 UTC
    assert window_start(Unit.DAY, edge) == edge
    assert window_start(Unit.DAY, edge - 0.001) == edge - 86_400
    assert seconds_until_reset(Unit.SECOND, edge) == 1
