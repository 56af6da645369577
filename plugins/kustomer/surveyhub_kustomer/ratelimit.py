"""A request budget per Kustomer connection, shared by every worker through Redis.

Kustomer counts requests per org per minute (300–2,000 by plan, shared with every other
integration) and machine-user searches separately (100 a minute). Workers on several
machines share one budget here, keep 10% in reserve for the org's other tools, and all
stop until the reset time after a 429.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from collections.abc import Mapping

from redis import Redis

DEFAULT_LIMIT = 300  # the smallest plan's, until Kustomer's headers tell us the real one
SEARCH_LIMIT = 100
RESERVE = 0.9

# Take one request from every counter in KEYS[2..] if all are under their limits and the
# connection is not blocked; else return when to try again (epoch seconds).
_TAKE = """
local now = tonumber(ARGV[1])
local window_end = ARGV[2]
local blocked = tonumber(redis.call('get', KEYS[1]) or '0')
if blocked > now then return tostring(blocked) end
for i = 2, #KEYS do
  if tonumber(redis.call('get', KEYS[i]) or '0') >= tonumber(ARGV[i + 1]) then
    return window_end
  end
end
for i = 2, #KEYS do
  redis.call('incr', KEYS[i])
  redis.call('expire', KEYS[i], 120)
end
return '0'
"""


# Move the "blocked until" time later, never earlier, atomically across workers.
_BLOCK = """
local current = tonumber(redis.call('get', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then
  redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
return 0
"""


class RateBudget:
    """Shared counters for one Kustomer org (`name`: its API host), in one-minute windows.

    Windows are cut by each worker's clock: keep the machines' clocks in sync (NTP).
    """

    def __init__(self, redis: Redis, name: str, clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.prefix = f"surveyhub:kustomer:{name}"
        self.clock = clock
        self._take = redis.register_script(_TAKE)
        self._block = redis.register_script(_BLOCK)

    def limit(self) -> int:
        """Requests per minute the org allows, as last reported by Kustomer."""
        raw = self.redis.get(f"{self.prefix}:limit")
        return int(raw) if raw else DEFAULT_LIMIT

    def take(self, search: bool = False) -> float:
        """Use one request; return 0, or the epoch time to wait for when over budget."""
        now = self.clock()
        window = int(now // 60)
        keys = [f"{self.prefix}:blocked", f"{self.prefix}:all:{window}"]
        limits = [int(self.limit() * RESERVE)]
        if search:
            keys.append(f"{self.prefix}:search:{window}")
            limits.append(int(SEARCH_LIMIT * RESERVE))
        result = self._take(keys=keys, args=[now, (window + 1) * 60, *limits])
        return float(result)

    def learn(self, headers: Mapping[str, str]) -> None:
        """Remember the org's limit, and pause when other tools used up the minute.

        The limit is shared by every integration of the org: when Kustomer reports that
        less than the reserve remains, everyone here waits for the next window.
        """
        limit, remaining = headers.get("x-ratelimit-limit"), headers.get("x-ratelimit-remaining")
        if limit and limit.isdigit():
            self.redis.set(f"{self.prefix}:limit", int(limit), ex=24 * 3600)
        known = limit and limit.isdigit() and remaining and remaining.isdigit()
        if known and int(remaining) < int(limit) * (1 - RESERVE):
            self.block_until((int(self.clock() // 60) + 1) * 60)

    def block_until(self, epoch: float) -> None:
        """Stop every process from calling Kustomer until `epoch` (after a 429)."""
        ttl = max(1, int(epoch - self.clock()) + 1)
        self._block(keys=[f"{self.prefix}:blocked"], args=[epoch, ttl])
