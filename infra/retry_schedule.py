"""When the next attempt of a delivery is due: a schedule of delays, spread by jitter (webhooks, notifications)."""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence

JITTER_FRACTION = 0.1


def jittered(delay: float, rand: Callable[[], float] = random.random, fraction: float = JITTER_FRACTION) -> float:
    """`delay` spread by ±fraction so receivers coming back are not hit by every retry at once."""
    return max(0.0, delay * (1 + fraction * (2 * rand() - 1)))


def next_delay(
    schedule: Sequence[float], position: int, retry_after: float | None, rand: Callable[[], float] = random.random
) -> float | None:
    """Seconds until the next attempt after attempt number `position` of the schedule; None when exhausted."""
    if position > len(schedule):
        return None
    delay = jittered(schedule[position - 1], rand)
    return delay if retry_after is None else max(delay, retry_after)
