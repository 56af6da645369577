"""A fake clock whose sleeps advance time, so waits are asserted instead of waited."""

from __future__ import annotations


class Clock:
    """Callable like `time.time`; `sleep` records the wait and moves the time on."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
