"""podforge/pod/retry.py: the one retry loop of the fetcher and r2sync."""

from __future__ import annotations

import threading
import time

import pytest

from podforge.pod.retry import Backoff, GaveUp, retrying

QUICK = Backoff(attempts=4, first_delay_s=0.001)


def _transient(error: Exception) -> str | None:
    return str(error) if isinstance(error, ConnectionError) else None


def test_a_transient_failure_is_tried_again_and_each_retry_is_said():
    tries: list[int] = []
    said: list[tuple[str, float]] = []

    def flaky() -> str:
        tries.append(1)
        if len(tries) < 3:
            raise ConnectionError(f"reset {len(tries)}")
        return "done"

    assert retrying(flaky, _transient, QUICK, lambda c, d: said.append((c, d))) == "done"
    assert said == [("reset 1", 0.001), ("reset 2", 0.002)]  # the delay doubles


def test_the_attempts_run_out_with_the_last_cause():
    def down() -> None:
        raise ConnectionError("connection refused")

    with pytest.raises(GaveUp) as raised:
        retrying(down, _transient, QUICK, lambda *_: None)
    assert (raised.value.cause, raised.value.attempts) == ("connection refused", 4)


def test_a_failure_retrying_cannot_help_propagates_at_once():
    tries: list[int] = []

    def wrong() -> None:
        tries.append(1)
        raise ValueError("bad manifest")

    with pytest.raises(ValueError, match="bad manifest"):
        retrying(wrong, _transient, QUICK, lambda *_: None)
    assert len(tries) == 1


def test_stopping_ends_the_wait_and_a_stopped_run_tries_no_more():
    stopping = threading.Event()

    def down() -> None:
        raise ConnectionError("unreachable")

    slow = Backoff(attempts=None, first_delay_s=60)
    threading.Timer(0.1, stopping.set).start()  # a SIGTERM during the first 60 s wait
    began = time.monotonic()
    with pytest.raises(GaveUp, match=r"stopped while retrying \(unreachable\)"):
        retrying(down, _transient, slow, lambda *_: None, stopping)
    assert time.monotonic() - began < 30
    with pytest.raises(GaveUp) as raised:
        retrying(down, _transient, slow, lambda *_: None, stopping)
    assert raised.value.attempts == 1
