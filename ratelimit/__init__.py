"""Limit policies, counters and decisions (free-model daily limits by lifetime purchases, per-minute
limits). Knows neither aiohttp nor prices. Grows with the rate-limit issue; today it holds the UTC
window arithmetic that every limit is counted in."""
