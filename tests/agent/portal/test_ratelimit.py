"""Each client gets its own token bucket."""

from __future__ import annotations

from agent.portal.ratelimit import RateLimiter


def test_a_burst_is_allowed_then_refused_then_refilled() -> None:
    limiter = RateLimiter(rate=2.0, burst=3)
    assert [limiter.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.retry_after("a") >= 1
    assert limiter.allow("a", 0.5)


def test_clients_do_not_share_a_bucket() -> None:
    limiter = RateLimiter(rate=1.0, burst=1)
    assert limiter.allow("a", 0.0)
    assert not limiter.allow("a", 0.0)
    assert limiter.allow("b", 0.0)


def test_memory_is_bounded_by_evicting_the_oldest_clients() -> None:
    limiter = RateLimiter(rate=1.0, burst=1, max_keys=100)
    for i in range(1000):
        limiter.allow(str(i), float(i))
    assert len(limiter._buckets) == 100
