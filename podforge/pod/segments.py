"""The byte ranges of one multi-connection download: which connection writes which bytes,
how far each got, and the record of it beside the partial file, so a killed download
resumes fetching only the bytes no range has written.

The record (``<partial>.ranges``, JSON) is rewritten at most every ``SAVE_EVERY_S`` and when
the download stops; it may lag the file, never lead it (bytes are written before they are
counted), so a resume at worst fetches again the last second's bytes of each range.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

MIB = 1 << 20
# Like aria2c's --min-split-size: no range is cut below this (a new connection's setup and
# slow start cost more than they bring on a small piece).
MIN_SPLIT = 20 * MIB
SAVE_EVERY_S = 1.0


def connections_for(size: int, limit: int) -> int:
    """How many connections a file of ``size`` bytes gets: one per MIN_SPLIT, up to ``limit``."""
    return max(1, min(limit, size // MIN_SPLIT))


@dataclass
class Range:
    start: int
    next: int  # the first byte not yet written
    end: int  # exclusive
    taken: bool = False  # a connection is fetching it

    @property
    def left(self) -> int:
        return self.end - self.next


class Ranges:
    """The ranges of one file; thread-safe. Connections ``take`` a range, ``wrote`` what
    they wrote, and stop once ``wrote`` says the range is done (it may shrink meanwhile:
    a connection with nothing left takes the far half of the largest range in progress)."""

    def __init__(self, record: Path, size: int, source_id: str, ranges: list[Range]) -> None:
        self.record = record
        self.size = size
        self.source_id = source_id  # the record is only resumed for the same source
        self.ranges = ranges
        self.lock = threading.Lock()
        self.saved_at = 0.0

    @classmethod
    def resume_or_split(
        cls, record: Path, size: int, source_id: str, connections: int, written: int = 0
    ) -> Ranges:
        """The ranges the record kept for this file, or ``[written, size)`` cut in
        ``connections`` (``written``: a single-stream partial's length, all of it good)."""
        try:
            kept = json.loads(record.read_text())
        except (FileNotFoundError, ValueError):
            kept = None
        if isinstance(kept, dict) and kept.get("size") == size and kept.get("source") == source_id:
            ranges = [Range(*map(int, triple)) for triple in kept["ranges"]]
        else:
            step = max(1, -(-(size - written) // connections))
            ranges = [
                Range(start, start, min(start + step, size)) for start in range(written, size, step)
            ]
        found = cls(record, size, source_id, ranges)
        found.save()
        return found

    @property
    def missing(self) -> int:
        with self.lock:
            return sum(r.left for r in self.ranges)

    def take(self) -> Range | None:
        """A range no connection fetches, or the far half of the largest one in progress;
        None when every byte is written or taken."""
        with self.lock:
            free = [r for r in self.ranges if not r.taken and r.left > 0]
            if free:
                free[0].taken = True
                return free[0]
            largest = max(self.ranges, key=lambda r: r.left, default=None)
            if largest is None or largest.left < 2 * MIN_SPLIT:
                return None
            middle = largest.next + largest.left // 2
            half = Range(middle, middle, largest.end, taken=True)
            largest.end = middle
            self.ranges.append(half)
            return half

    def allowed(self, part: Range, count: int) -> int:
        """Of ``count`` bytes read for ``part``, how many are still its own to write."""
        with self.lock:
            return max(0, min(count, part.end - part.next))

    def wrote(self, part: Range, count: int) -> bool:
        """Count ``count`` bytes written at ``part.next``; True while the range has more."""
        with self.lock:
            part.next += count
            more = part.next < part.end
            if not more:
                part.taken = False
        if time.monotonic() - self.saved_at >= SAVE_EVERY_S:
            self.save()
        return more

    def release(self, part: Range) -> None:
        """The connection gave ``part`` up (to retry it, or because the fetch stops)."""
        with self.lock:
            part.taken = False
        self.save()

    def save(self) -> None:
        with self.lock:
            kept = {
                "size": self.size,
                "source": self.source_id,
                "ranges": [[r.start, r.next, r.end] for r in self.ranges if r.left > 0],
            }
            self.saved_at = time.monotonic()
            temporary = self.record.with_name(self.record.name + ".tmp")
            temporary.write_text(json.dumps(kept))
            os.replace(temporary, self.record)
