"""A deploy's timeline on one pod: each step's start, end and bytes, what overlapped, and how
long the bytes alone would take. Pure: tasks/timeline.py records the operations and keeps it.

A pod is billed by the second; the timeline says where a deploy's seconds went, and its
ratio to the bytes-only time says how much of it was waiting on something else than the link.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Step:
    """One deploy step (a task's group of operations) on one pod."""

    name: str
    start: float  # seconds after the deploy's first operation on the pod
    end: float
    bytes: int | None = None  # what the step downloaded, where the step knows it
    # How long those bytes took, when the step spans more than its download (the models'
    # fetch runs in the background from its start to the wait for it).
    transfer_seconds: float | None = None

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def rate(self) -> float | None:
        """Bytes per second of the step's download (None: it downloaded nothing known)."""
        seconds = self.transfer_seconds or self.seconds
        return self.bytes / seconds if self.bytes and seconds else None


@dataclass(frozen=True)
class Transfer:
    """What a step downloaded: its bytes, and in how many seconds when known."""

    bytes: int
    seconds: float | None = None


@dataclass(frozen=True)
class Operation:
    """One operation as it ran: its name (``Step | what``) and when."""

    name: str
    start: float
    end: float


def step_name(operation: str) -> str:
    """The step an operation belongs to: its deploy group (``Models | Fetch 3 missing model
    files`` -> ``Models``), or, outside any group, its name up to a colon (``Verify: ComfyUI
    serves …`` -> ``Verify``)."""
    group, separator, _ = operation.partition(" | ")
    if separator:
        return group
    return operation.partition(":")[0]


def steps(operations: Sequence[Operation], transfers: Mapping[str, Transfer]) -> list[Step]:
    """The steps, in the order they started: the operations of one step merged (first start,
    last end), times made relative to the first operation, with what each downloaded."""
    if not operations:
        return []
    origin = min(operation.start for operation in operations)
    spans: dict[str, list[float]] = {}
    for operation in sorted(operations, key=lambda operation: operation.start):
        name = step_name(operation.name)
        span = spans.setdefault(name, [operation.start, operation.end])
        span[0], span[1] = min(span[0], operation.start), max(span[1], operation.end)
    found = []
    for name, (start, end) in spans.items():
        transfer = transfers.get(name)
        found.append(
            Step(name, start - origin, end - origin)
            if transfer is None
            else Step(name, start - origin, end - origin, transfer.bytes, transfer.seconds)
        )
    return found


@dataclass(frozen=True)
class Timeline:
    """One deploy of one pod, step by step."""

    host: str
    started: str  # when the first operation started, UTC, ISO 8601
    steps: list[Step]

    @property
    def seconds(self) -> float:
        return max((step.end for step in self.steps), default=0.0)

    def overlaps(self) -> list[tuple[str, str, float]]:
        """Pairs of steps that ran at the same time, and for how many seconds."""
        found = []
        for index, first in enumerate(self.steps):
            for second in self.steps[index + 1 :]:
                shared = min(first.end, second.end) - max(first.start, second.start)
                if shared > 0:
                    found.append((first.name, second.name, shared))
        return found

    def link_rate(self) -> float | None:
        """Bytes per second: the fastest rate a downloading step reached (the link gave at
        least that). None when no step downloaded anything."""
        return max((step.rate for step in self.steps if step.rate), default=None)

    def bytes_only_seconds(self) -> float | None:
        """How long the downloaded bytes alone take at that rate: the floor for this deploy."""
        rate = self.link_rate()
        if rate is None:
            return None
        return sum(step.bytes or 0 for step in self.steps) / rate

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Timeline:
        """The timeline ``as_json`` wrote (a pod's timeline.json), read back."""
        return cls(
            data["host"],
            data["started"],
            [
                Step(
                    step["name"],
                    step["start"],
                    step["end"],
                    step.get("bytes"),
                    step.get("transfer_seconds"),
                )
                for step in data["steps"]
            ],
        )

    def as_json(self) -> dict[str, object]:
        bytes_only = self.bytes_only_seconds()
        return {
            "host": self.host,
            "started": self.started,
            "seconds": round(self.seconds, 2),
            "steps": [
                {
                    "name": step.name,
                    "start": round(step.start, 2),
                    "end": round(step.end, 2),
                    "seconds": round(step.seconds, 2),
                    "bytes": step.bytes,
                    "transfer_seconds": step.transfer_seconds,
                }
                for step in self.steps
            ],
            "overlaps": [
                {"steps": [first, second], "seconds": round(shared, 2)}
                for first, second, shared in self.overlaps()
            ],
            "bytes_only_seconds": None if bytes_only is None else round(bytes_only, 2),
            "ratio": None if not bytes_only else round(self.seconds / bytes_only, 2),
        }

    def lines(self) -> list[str]:
        """The timeline as a person reads it at the end of a deploy."""
        width = max((len(step.name) for step in self.steps), default=0)
        shown = [f"timeline: {self.seconds:.1f} s from the first operation to the last"]
        for step in self.steps:
            row = (
                f"  {step.name:<{width}}  {step.start:7.1f} -> {step.end:7.1f} s"
                f"  ({step.seconds:.1f} s)"
            )
            if step.bytes and step.rate:
                row += f"  {_size(step.bytes)} at {_size(step.rate)}/s"
                if step.transfer_seconds is not None:
                    row += f" (in {step.transfer_seconds:.1f} s)"
            shown.append(row)
        overlaps = self.overlaps()
        if overlaps:
            shown += [f"  overlapped: {a} and {b} for {shared:.1f} s" for a, b, shared in overlaps]
        else:
            shown.append("  overlapped: nothing (each step waited for the one before)")
        bytes_only = self.bytes_only_seconds()
        if bytes_only:
            total = sum(step.bytes or 0 for step in self.steps)
            rate = self.link_rate() or 0.0
            shown.append(
                f"  bytes alone: {_size(total)} at {_size(rate)}/s take {bytes_only:.1f} s;"
                f" this deploy took {self.seconds:.1f} s ({self.seconds / bytes_only:.2f}x)"
            )
        else:
            shown.append("  bytes alone: nothing was downloaded")
        return shown


def _size(count: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.2f} {unit}"
    return f"{count:.0f} B"
