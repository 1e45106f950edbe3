"""One way to try again, for the fetcher and r2sync: exponential backoff with jitter, bounded
by a number of attempts or by the time spent since the first failure."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from podforge.core.errors import PodforgeError

T = TypeVar("T")


class GaveUp(PodforgeError):
    """The attempts or the time ran out; the message is the last cause."""

    def __init__(self, cause: str, attempts: int) -> None:
        super().__init__(cause)
        self.cause, self.attempts = cause, attempts


@dataclass(frozen=True)
class Backoff:
    attempts: int | None = 6  # tries in all; None: as many as the budget allows
    budget_s: float | None = None  # seconds of retrying after the first failure
    # With a budget, tries before it may end them: attempts that fail slowly (a stalled
    # connection the server drops, on a loaded machine) must not spend it all in one or two.
    min_attempts: int = 3
    first_delay_s: float = 0.5  # then doubled after each failure, up to max_delay_s
    max_delay_s: float = 30.0


def retrying(
    call: Callable[[], T],
    cause_of: Callable[[Exception], str | None],
    backoff: Backoff,
    on_retry: Callable[[str, float], None],
    stopping: threading.Event | None = None,
) -> T:
    """``call()`` until it returns.

    ``cause_of`` names, in words, why a failure is worth another try; for any other
    failure it returns None (the error propagates as it is) or raises what the caller should
    see instead. Before each new try ``on_retry(cause, delay_s)`` tells the user; the delay
    is jittered by +-50% so that pods failing together do not retry together. ``stopping``
    (set by a signal handler, say) ends the waiting at once. Raises ``GaveUp``.
    """
    delay, first_failure, attempts = backoff.first_delay_s, 0.0, 0
    while True:
        attempts += 1
        try:
            return call()
        except Exception as error:  # noqa: BLE001 - cause_of decides, or it propagates
            cause = cause_of(error)
            if cause is None:
                raise
        now = time.monotonic()
        first_failure = first_failure or now
        out_of_attempts = backoff.attempts is not None and attempts >= backoff.attempts
        out_of_time = (
            backoff.budget_s is not None
            and now - first_failure > backoff.budget_s
            and attempts >= backoff.min_attempts
        )
        if out_of_attempts or out_of_time or (stopping is not None and stopping.is_set()):
            raise GaveUp(cause, attempts)
        on_retry(cause, delay)
        wait = delay * random.uniform(0.5, 1.5)
        if stopping is None:
            time.sleep(wait)
        elif stopping.wait(wait):
            raise GaveUp(f"stopped while retrying ({cause})", attempts)
        delay = min(delay * 2, backoff.max_delay_s)
