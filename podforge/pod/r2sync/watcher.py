"""Which files under the watched directories are finished (settled for a while, and open for
writing by no process), and the wake-up that starts a rescan early: inotify on the trees,
through ``inotify_simple``; the rescan, not the event, decides what is finished."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from inotify_simple import INotify, flags

RESCAN_SECONDS = 3.0


def files_open_for_writing() -> set[str]:
    """Paths some process holds open for writing (/proc/*/fd where readable)."""
    writing = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
                if not target.startswith("/"):
                    continue
                with open(f"/proc/{pid}/fdinfo/{fd}") as info:
                    flags = next(
                        int(line.split()[1], 8) for line in info if line.startswith("flags:")
                    )
            except (OSError, StopIteration, ValueError):
                continue
            if flags & (os.O_WRONLY | os.O_RDWR):
                writing.add(target)
    return writing


@dataclass(frozen=True)
class Candidate:
    path: str  # absolute
    relative: str  # to its watched dir, posix
    size: int
    mtime_ns: int


def scan(watch: Sequence[Path], skip: set[str]) -> Iterator[Candidate]:
    for root in watch:
        for directory, _, names in os.walk(root):
            for name in sorted(names):
                path = os.path.join(directory, name)
                if path in skip:
                    continue
                try:
                    info = os.stat(path, follow_symlinks=False)
                except OSError:
                    continue  # gone since the listing
                if not stat.S_ISREG(info.st_mode):
                    continue
                relative = Path(path).relative_to(root).as_posix()
                yield Candidate(path, relative, info.st_size, info.st_mtime_ns)


class Wakeup:
    """Wakes a wait early when something under the watched trees is written, created or
    moved in (inotify on every directory there at start). Where the kernel refuses inotify
    (no instances or watches left), ``unavailable`` says why and waits are the rescan's."""

    def __init__(self, roots: Sequence[Path]) -> None:
        self._inotify: INotify | None = None
        self.unavailable: str | None = None
        mask = flags.CLOSE_WRITE | flags.MOVED_TO | flags.CREATE | flags.MODIFY
        try:
            inotify = INotify()
            for root in roots:
                for directory, _, _ in os.walk(root):
                    inotify.add_watch(directory, mask)
        except OSError as error:
            self.unavailable = f"inotify: {error.strerror}"
            return
        self._inotify = inotify

    def wait(self, seconds: float) -> None:
        """Until an event arrives or ``seconds`` pass; the events are only read away."""
        if self._inotify is None:
            time.sleep(seconds)
        else:
            self._inotify.read(timeout=int(seconds * 1000))
