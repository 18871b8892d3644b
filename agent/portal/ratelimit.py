"""A token bucket per client address, bounded in memory."""

from __future__ import annotations

from collections import OrderedDict


class RateLimiter:
    """`rate` requests per second per key, with bursts up to `burst`."""

    def __init__(self, rate: float, burst: int, max_keys: int = 20_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, key: str, now: float) -> bool:
        """Take one token for `key` at `now`; False when its bucket is empty."""
        tokens, last = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0.0, now - last) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return allowed

    def retry_after(self, key: str) -> int:
        """Whole seconds until `key` has a token again."""
        tokens, _ = self._buckets.get(key, (float(self.burst), 0.0))
        return max(1, int((1.0 - tokens) / self.rate) + 1)
