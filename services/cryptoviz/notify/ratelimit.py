"""A token bucket per target: `rate` messages per minute on average, bursts of up to `burst`.

Pure and clock-injected (the caller passes `now`), so it is tested without sleeping. Notifier replicas
share no state: each keeps its share of every target's limit (`share_of`), so together they stay within it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    rate_per_minute: float
    """0 turns the limit off."""
    burst: int = 10
    tokens: float = field(init=False)
    updated: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.tokens = float(self.burst)

    @classmethod
    def share_of(cls, rate_per_minute: float, burst: int, replicas: int) -> TokenBucket:
        """One replica's part of a limit shared by `replicas`: the rate divided, the burst divided
        rounding down (at least one message, so a replica never stalls for good)."""
        return cls(rate_per_minute / replicas, max(1, burst // replicas))

    def _refill(self, now: float) -> None:
        if self.updated is not None:
            self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate_per_minute / 60.0)
        self.updated = now

    def reserve(self, now: float) -> float:
        """Take one token; return the seconds to wait before sending (0 when one was free).

        A reservation made while the bucket is empty is already counted, so concurrent callers
        queue up one refill interval apart instead of all waking at once.
        """
        if self.rate_per_minute <= 0:
            return 0.0
        self._refill(now)
        self.tokens -= 1.0
        if self.tokens >= 0:
            return 0.0
        return -self.tokens * 60.0 / self.rate_per_minute
