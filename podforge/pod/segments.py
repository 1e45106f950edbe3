"""The byte ranges of one multi-connection download: which connection writes which bytes,
how far each got, and the record of it beside the partial file, so a killed download
resumes fetching only the bytes no range has written.

The file is cut in pieces of ``MIN_SPLIT`` that connections take in order, so the written
prefix grows steadily and its sha256 is computed during the download; when no piece is
left, a connection takes the far half of the largest piece still in progress (as aria2c
does), so no connection idles at the end while one finishes a long piece alone.

The record (``<partial>.ranges``, JSON) is rewritten at most every ``SAVE_EVERY_S`` and when
the download stops; it may lag the file, never lead it (bytes are written before they are
counted), so a resume at worst fetches again the last second's bytes of each connection.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

MIB = 1 << 20
# Like aria2c's --min-split-size: a piece (and a file's share per connection) is at least
# this, since a new request's setup and slow start cost more than a small piece brings.
MIN_SPLIT = 20 * MIB
# A piece in progress is halved for an idle connection only while both halves keep this.
MIN_STEAL = 2 * MIB
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
    """The ranges of one file, thread-safe. Connections ``take`` a range and count what they
    ``wrote``; ``allowed`` says how much of what they read is still theirs (a range shrinks
    when another connection takes its far half). ``first_missing`` is where the written
    prefix ends."""

    def __init__(self, record: Path, size: int, source_id: str, ranges: list[Range]) -> None:
        self.record = record
        self.size = size
        self.source_id = source_id  # a record is resumed for the same source alone
        self.ranges = ranges
        self.changed = threading.Condition()
        self.saved_at = 0.0

    @classmethod
    def resume_or_split(cls, record: Path, size: int, source_id: str, written: int = 0) -> Ranges:
        """The ranges the record kept for this file, or ``[written, size)`` cut in pieces
        (``written``: the length of a one-stream partial, all of it good)."""
        try:
            kept = json.loads(record.read_text())
        except (FileNotFoundError, ValueError):
            kept = None
        if isinstance(kept, dict) and kept.get("size") == size and kept.get("source") == source_id:
            ranges = [Range(*map(int, triple)) for triple in kept["ranges"]]
        else:
            ranges = [
                Range(start, start, min(start + MIN_SPLIT, size))
                for start in range(written, size, MIN_SPLIT)
            ]
        found = cls(record, size, source_id, ranges)
        found.save()
        return found

    @property
    def missing(self) -> int:
        with self.changed:
            return sum(r.left for r in self.ranges)

    def first_missing(self) -> int:
        """Every byte below this is written (every byte belongs to exactly one range)."""
        with self.changed:
            return min((r.next for r in self.ranges if r.left > 0), default=self.size)

    def take(self) -> Range | None:
        """The first range no connection fetches, or the far half of the largest one in
        progress; None when every byte is written or in hand."""
        with self.changed:
            free = [r for r in self.ranges if not r.taken and r.left > 0]
            if free:
                chosen = min(free, key=lambda r: r.next)
                chosen.taken = True
                return chosen
            largest = max(self.ranges, key=lambda r: r.left, default=None)
            if largest is None or largest.left < 2 * MIN_STEAL:
                return None
            middle = largest.next + largest.left // 2
            half = Range(middle, middle, largest.end, taken=True)
            largest.end = middle
            self.ranges.append(half)
            return half

    def allowed(self, part: Range, count: int) -> int:
        """Of ``count`` bytes read for ``part``, how many are still its own to write."""
        with self.changed:
            return max(0, min(count, part.end - part.next))

    def wrote(self, part: Range, count: int) -> bool:
        """Count ``count`` bytes written at ``part.next``; True while the range has more."""
        with self.changed:
            part.next += count
            more = part.next < part.end
            if not more:
                part.taken = False
            self.changed.notify_all()
        if time.monotonic() - self.saved_at >= SAVE_EVERY_S:
            self.save()
        return more

    def release(self, part: Range) -> None:
        """The connection gave ``part`` up (to retry it, or because the fetch stops)."""
        with self.changed:
            part.taken = False
            self.changed.notify_all()
        self.save()

    def wait_past(self, offset: int, timeout: float) -> int:
        """Wait until the written prefix ends beyond ``offset`` (or ``timeout``); its end."""
        with self.changed:
            self.changed.wait_for(
                lambda: (
                    min((r.next for r in self.ranges if r.left > 0), default=self.size) > offset
                ),
                timeout,
            )
        return self.first_missing()

    def save(self) -> None:
        with self.changed:
            kept = {
                "size": self.size,
                "source": self.source_id,
                "ranges": [[r.start, r.next, r.end] for r in self.ranges if r.left > 0],
            }
            self.saved_at = time.monotonic()
            temporary = self.record.with_name(self.record.name + ".tmp")
            temporary.write_text(json.dumps(kept))
            os.replace(temporary, self.record)
