"""Pod-side model fetcher: ``python -m podforge fetch MANIFEST``.

Downloads what is missing or wrong, several files at once; resumes from a ``.partial``
file across processes (huggingface_hub 2.x does not); retries resets, 5xx and short
bodies with exponential backoff; checks size and sha256 before an atomic rename, so no
partial or wrong file ever sits at a final path; writes a verification stamp so later runs
never hash again. A per-file ``flock`` keeps two fetchers on a shared volume from fetching
the same file; the kernel drops it when a fetcher dies, so a stale lock is simply free.
The HF token comes from the ``HF_TOKEN`` environment variable, never a command line.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import os
import shutil
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from podforge import stamps

CHUNK = 1 << 20


class FetchError(RuntimeError):
    """A file that could not be fetched; the message names it and says why."""


class Retryable(Exception):
    """A transient failure (reset, 5xx, short body): try again from the partial file."""


@dataclass(frozen=True)
class Wanted:
    repo: str
    revision: str
    path: str
    dest: Path
    bytes: int | None
    sha256: str | None

    @classmethod
    def from_manifest(cls, entry: dict[str, Any]) -> Wanted:
        return cls(
            repo=entry["repo"],
            revision=entry.get("revision", "main"),
            path=entry["path"],
            dest=Path(entry["dest"]),
            bytes=entry.get("bytes"),
            sha256=entry.get("sha256"),
        )


def is_current(wanted: Wanted) -> bool:
    """In place, stamped, and the stamp still describes the file and what is wanted."""
    return stamps.is_current(stamps.file_status(str(wanted.dest)), wanted.bytes, wanted.sha256)


# -- progress --------------------------------------------------------------------------------


class Progress:
    """Bytes, rate and ETA per file and in total: redrawn on a terminal, lines in a log."""

    def __init__(self, total: int, out: TextIO = sys.stderr, interval: float = 2.0) -> None:
        self.total = total
        self.done = 0
        self.out = out
        self.tty = out.isatty()
        self.interval = 0.2 if self.tty else interval
        self.started = time.monotonic()
        self.last = 0.0
        self.lock = threading.Lock()

    def advance(self, name: str, file_done: int, file_size: int, count: int) -> None:
        with self.lock:
            self.done += count
            now = time.monotonic()
            if now - self.last < self.interval and file_done < file_size:
                return
            self.last = now
            rate = self.done / max(now - self.started, 1e-6)
            eta = (self.total - self.done) / rate if rate else 0
            line = (
                f"fetch: {name} {file_done / 1e6:.1f}/{file_size / 1e6:.1f} MB | total "
                f"{self.done / 1e6:.1f}/{self.total / 1e6:.1f} MB {rate / 1e6:.1f} MB/s "
                f"ETA {eta:.0f}s"
            )
            self.out.write(("\r" + line + "\033[K") if self.tty else line + "\n")
            self.out.flush()

    def say(self, message: str) -> None:
        with self.lock:
            self.out.write(("\r\033[K" if self.tty else "") + message + "\n")
            self.out.flush()


# -- HTTP ------------------------------------------------------------------------------------


class Hub:
    def __init__(self, endpoint: str, token: str | None, timeout: float = 30.0) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.token = token
        self.timeout = timeout

    def url(self, wanted: Wanted) -> str:
        quoted = urllib.parse.quote(wanted.path)
        return f"{self.endpoint}/{wanted.repo}/resolve/{wanted.revision}/{quoted}"

    def open(self, wanted: Wanted, method: str = "GET", start: int = 0) -> Any:
        headers = {"User-Agent": "podforge-fetch"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if start:
            headers["Range"] = f"bytes={start}-"
        request = urllib.request.Request(self.url(wanted), headers=headers, method=method)
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as error:
            if error.code >= 500 or error.code == 429:
                raise Retryable(f"HTTP {error.code}") from None
            hint = " (gated repo: set HF_TOKEN)" if error.code in (401, 403) else ""
            raise FetchError(f"HTTP {error.code} from the hub{hint}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            raise Retryable(str(error)) from None

    def remote(self, wanted: Wanted) -> tuple[int, str | None]:
        """(size, sha256) from HEAD: X-Linked-Size / X-Linked-Etag for LFS files."""
        with self.open(wanted, "HEAD") as response:
            size = response.headers.get("X-Linked-Size") or response.headers["Content-Length"]
            etag = (response.headers.get("X-Linked-Etag") or "").strip('"') or None
        return int(size), etag if etag and len(etag) == 64 else None


# -- one file --------------------------------------------------------------------------------


def partial_path(wanted: Wanted, staging: Path | None) -> Path:
    """Where a download grows: beside the target, or on local disk for a slow volume."""
    return (staging or wanted.dest.parent) / (wanted.dest.name + ".partial")


def fetch_one(
    wanted: Wanted,
    expected: tuple[int, str | None],
    hub: Hub,
    progress: Progress,
    staging: Path | None = None,
    retries: int = 5,
    backoff: float = 0.5,
) -> str:
    """Bring one file into place; returns "present" or "fetched". Raises FetchError."""
    with open(wanted.dest.with_name(wanted.dest.name + ".lock"), "a") as lock:
        # Blocks while another fetcher (this pod or another on the volume) has the file.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_current(wanted):
            return "present"
        size, sha256 = expected
        partial = partial_path(wanted, staging)
        partial.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(retries + 1):
            try:
                digest = _download(wanted, hub, partial, size, progress)
            except Retryable as why:
                if attempt == retries:
                    raise FetchError(f"gave up after {retries + 1} attempts: {why}") from None
                progress.say(f"fetch: {wanted.dest.name}: {why}; retrying from {_size(partial)}")
                time.sleep(backoff * 2**attempt)
                continue
            if sha256 is not None and digest != sha256:
                partial.unlink()
                if attempt == retries:
                    raise FetchError(f"sha256 {digest} does not match the expected {sha256}")
                progress.say(f"fetch: {wanted.dest.name}: sha256 mismatch; fetching again")
                continue
            _publish(partial, wanted.dest)
            stamps.write_stamp(str(wanted.dest), digest)
            return "fetched"
    raise AssertionError("unreachable")


def _expected(wanted: Wanted, hub: Hub, retries: int, backoff: float) -> tuple[int, str | None]:
    for attempt in range(retries + 1):
        try:
            size, sha256 = hub.remote(wanted)
            break
        except Retryable as why:
            if attempt == retries:
                raise FetchError(f"HEAD failed after {retries + 1} attempts: {why}") from None
            time.sleep(backoff * 2**attempt)
    if wanted.bytes is not None and wanted.bytes != size:
        raise FetchError(f"the hub says {size} bytes, the catalog expects {wanted.bytes}")
    if wanted.sha256 is not None and sha256 is not None and wanted.sha256 != sha256:
        raise FetchError(f"the hub's sha256 {sha256} differs from the catalog's {wanted.sha256}")
    return size, wanted.sha256 or sha256


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _download(wanted: Wanted, hub: Hub, partial: Path, size: int, progress: Progress) -> str:
    """Append to ``partial`` until it holds ``size`` bytes; its sha256."""
    digest = hashlib.sha256()
    have = _size(partial)
    if have > size:
        partial.unlink()
        have = 0
    with open(partial, "ab+") as out:
        out.seek(0)
        for block in iter(lambda: out.read(CHUNK), b""):
            digest.update(block)
        if have < size:
            response = hub.open(wanted, start=have)
            if have and response.status != 206:
                # The server ignored Range: start over rather than append the whole file.
                out.truncate(0)
                digest, have = hashlib.sha256(), 0
            progress.advance(wanted.dest.name, have, size, have)
            buffer = memoryview(bytearray(4 * CHUNK))  # reused: no allocation per block
            try:
                with response:
                    while count := response.readinto(buffer):
                        block = buffer[:count]
                        out.write(block)
                        digest.update(block)
                        have += count
                        progress.advance(wanted.dest.name, have, size, count)
            except (http.client.IncompleteRead, ConnectionError, TimeoutError, OSError) as error:
                out.flush()
                raise Retryable(f"connection lost at byte {have}: {error}") from None
        # No fsync: the stamp records size and mtime, so a file a crash left short or
        # stale is fetched again; forcing GBs to disk would halve throughput.
        out.flush()
    if have != size:
        raise Retryable(f"short body: {have} of {size} bytes")
    return digest.hexdigest()


def _publish(partial: Path, dest: Path) -> None:
    """Atomic rename into place; across filesystems, copy beside the target first."""
    if partial.parent.stat().st_dev == dest.parent.stat().st_dev:
        os.replace(partial, dest)
        return
    beside = dest.with_name(dest.name + ".publishing")
    shutil.copyfile(partial, beside)
    os.replace(beside, dest)
    partial.unlink()


# -- the whole manifest ----------------------------------------------------------------------


def disk_shortfall(todo: list[tuple[Wanted, int]], staging: Path | None) -> str | None:
    """None when the files fit where they download; otherwise how much is needed and free."""
    need = sum(size - _size(partial_path(w, staging)) for w, size in todo)
    probe = staging or todo[0][0].dest.parent
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if need <= free:
        return None
    return f"{need / 1e9:.2f} GB needed under {probe}, {free / 1e9:.2f} GB free"


def fetch_all(
    manifest: list[dict[str, Any]],
    hub: Hub,
    concurrency: int = 4,
    staging: Path | None = None,
    out: TextIO = sys.stderr,
    retries: int = 5,
    backoff: float = 0.5,
) -> dict[str, str]:
    """Fetch every missing or wrong file; returns dest -> "present" | "fetched".

    Raises FetchError naming each file that failed and why.
    """
    wanted = [Wanted.from_manifest(entry) for entry in manifest]
    results = {str(w.dest): "present" for w in wanted if is_current(w)}
    missing = [w for w in wanted if str(w.dest) not in results]
    if not missing:
        return results
    failures: list[str] = []
    expected: dict[Wanted, tuple[int, str | None]] = {}
    for w in missing:
        try:
            expected[w] = _expected(w, hub, retries, backoff)
        except FetchError as error:
            failures.append(f"{w.dest}: {error}")
    if failures:
        raise FetchError("; ".join(failures))
    for w in missing:
        w.dest.parent.mkdir(parents=True, exist_ok=True)
    shortfall = disk_shortfall([(w, expected[w][0]) for w in missing], staging)
    if shortfall:
        raise FetchError(f"not enough disk space: {shortfall}; nothing was downloaded")
    progress = Progress(sum(size for size, _ in expected.values()), out)
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = {
            w: pool.submit(fetch_one, w, expected[w], hub, progress, staging, retries, backoff)
            for w in missing
        }
        for w, future in futures.items():
            try:
                results[str(w.dest)] = future.result()
            except FetchError as error:
                failures.append(f"{w.dest}: {error}")
    if failures:
        raise FetchError("; ".join(failures))
    return results
