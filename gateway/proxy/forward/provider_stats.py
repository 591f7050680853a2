"""Each provider's recent latency and throughput, as this process measured them: what
`provider.sort` ("latency", "throughput") and the `:nitro` suffix order providers by.

Latency is the time from sending the request to the provider's first byte; throughput is output
tokens a second from the first byte to the last (answers of at least MIN_TOKENS only: a short
answer says more about latency than speed). Both are exponentially weighted averages with weight
WEIGHT for the newest request, so that the last ten or so requests count most. Nothing is shared
between workers or gateways: each routes by what it saw. A provider not measured yet ranks first,
so that every provider is tried and measured.
"""

from dataclasses import dataclass

WEIGHT = 0.2
MIN_TOKENS = 16


@dataclass(slots=True)
class _Measured:
    latency: float | None = None
    throughput: float | None = None


class ProviderStats:
    def __init__(self) -> None:
        self._by_name: dict[str, _Measured] = {}

    def observe(
        self, provider: str, latency: float, tokens: int, generation_seconds: float
    ) -> None:
        measured = self._by_name.setdefault(provider, _Measured())
        measured.latency = _average(measured.latency, max(latency, 0.0))
        if tokens >= MIN_TOKENS and generation_seconds > 0:
            measured.throughput = _average(measured.throughput, tokens / generation_seconds)

    def latency(self, provider: str) -> float | None:
        measured = self._by_name.get(provider)
        return None if measured is None else measured.latency

    def throughput(self, provider: str) -> float | None:
        measured = self._by_name.get(provider)
        return None if measured is None else measured.throughput

    def latency_rank(self, provider: str) -> tuple[int, float]:
        """Sort key: not yet measured first, then the lowest latency."""
        latency = self.latency(provider)
        return (0, 0.0) if latency is None else (1, latency)

    def throughput_rank(self, provider: str) -> tuple[int, float]:
        """Sort key: not yet measured first, then the highest throughput."""
        throughput = self.throughput(provider)
        return (0, 0.0) if throughput is None else (1, -throughput)


def _average(old: float | None, new: float) -> float:
    return new if old is None else old + WEIGHT * (new - old)
