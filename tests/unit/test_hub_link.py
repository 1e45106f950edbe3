"""The sandbox hub's one link (``link_bps``): every response takes its turn at one rate, so
bench.serve's downloads share a capped link as a pod's share its network."""

from __future__ import annotations

import pytest

from sandbox.hub import Link


def test_pieces_queue_behind_each_other_at_the_links_rate():
    link = Link()
    # Two responses' pieces of 1 kB at 1 kB/s: the second is through a second after the first.
    first, second = link.wait(1000, 1000), link.wait(1000, 1000)
    assert first == pytest.approx(1.0, abs=0.05)
    assert second == pytest.approx(2.0, abs=0.05)
    # 200 kB more at 100 kB/s queue behind those two seconds.
    assert link.wait(200_000, 100_000) == pytest.approx(4.0, abs=0.05)
