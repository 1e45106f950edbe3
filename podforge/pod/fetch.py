"""Pod-side model fetcher: ``podforge fetch MANIFEST``.

Downloads what is missing or wrong, several files at once, from Hugging Face, CivitAI or
any URL (podforge/pod/remotes.py). Every source gets the same guarantees:

- a per-file ``flock``, so two fetchers on a shared volume never fetch the same file (the
  kernel drops it when a fetcher dies: a stale lock is simply free);
- a disk precheck before any byte moves;
- resume across processes from a ``.partial`` file (huggingface_hub 2.x does not);
- retries of resets, 5xx and short bodies with backoff (podforge/pod/retry.py);
- size and sha256 checked before an atomic rename, so no partial or wrong file ever sits
  at a final path, then a verification stamp, so later runs never hash again;
- live progress with rate and ETA.

A large file comes over several connections (byte ranges of at least 20 MiB, at most
``--connections``, as aria2c's -x16 -s16), written at their offsets and recorded in
``<partial>.ranges`` (podforge/pod/segments.py), so a resume fetches only missing bytes.
Where the hub offers Xet storage (``X-Xet-Hash``) and ``hf_xet`` is installed, the bytes
come through hf_xet instead. Tokens come from the environment or 0600 files, never a
command line, and are never printed.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import http.client
import json
import os
import posixpath
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from podforge.core.errors import PodforgeError
from podforge.core.paths import PathError, relative_path, within
from podforge.core.plan import PlannedModel
from podforge.core.problems import where_and_why
from podforge.pod import stamps
from podforge.pod.remotes import FetchError, Remote, Retryable, Sources
from podforge.pod.retry import Backoff, GaveUp, retrying
from podforge.pod.segments import Range, Ranges, connections_for

CHUNK = 1 << 20
# A reset, a 5xx or a short body is tried again from what is written: 6 tries in all.
FETCH_BACKOFF = Backoff(attempts=6)
CONNECTIONS = 16
ASKING_AT_ONCE = 16  # HEAD / metadata requests in flight

__all__ = ["FetchError", "Progress", "Sources", "fetch_all", "read_manifest"]


def read_manifest(path: Path, models_dir: Path | None = None) -> list[PlannedModel]:
    """The manifest's entries (the plan's models: podforge/core/sources.py says how each
    names its source); a FetchError naming the file, the entry and the field otherwise.
    Each dest must lie inside ``models_dir`` (podforge/core/paths.py's rule), symlinks
    followed; without one, each must still be a plain absolute path."""
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise FetchError(f"manifest {path}: cannot read it as JSON ({error})") from None
    if not isinstance(entries, list):
        raise FetchError(f"manifest {path}: expected a JSON list of files")
    wanted = []
    for index, entry in enumerate(entries):
        where = f"manifest {path}, entry {index}"
        if not isinstance(entry, dict):
            raise FetchError(f"{where}: expected an object with dest and a source")
        try:
            model = PlannedModel.model_validate(entry)
        except ValidationError as error:
            field, why = where_and_why(error)
            raise FetchError(f"{where}: {field + ': ' if field else ''}{why}") from None
        if not Path(model.dest).is_absolute():
            raise FetchError(f"{where}: 'dest' must be an absolute path, got {model.dest!r}")
        problem = dest_problem(model.dest, models_dir)
        if problem:
            raise FetchError(f"{where}: dest: {problem}")
        wanted.append(model)
    dests = [model.dest for model in wanted]
    doubled = sorted({dest for dest in dests if dests.count(dest) > 1})
    if doubled:
        raise FetchError(f"manifest {path}: entries share a dest: {', '.join(doubled)}")
    return wanted


def dest_problem(dest: str, models_dir: Path | None) -> str | None:
    """Why a file may not be written at ``dest``: outside the models dir (by its text or
    through a symlink), a part that is no name, a directory in its place."""
    base = str(models_dir) if models_dir is not None else "/"
    if not within(base, dest) or posixpath.normpath(dest) != dest or dest == base:
        return f"{dest!r} is not a file inside the models dir {base}"
    try:
        relative_path(posixpath.relpath(dest, base))
    except PathError as error:
        return str(error)
    real_base = os.path.realpath(base)
    if not within(real_base, os.path.realpath(dest)):
        return f"{dest} leads outside the models dir {base} through a symlink"
    if os.path.isdir(dest):
        return f"{dest} is a directory"
    return None


def is_current(wanted: PlannedModel) -> bool:
    """In place, stamped, and the stamp still describes the file and what is wanted."""
    status = stamps.file_status(wanted.dest)
    return stamps.is_current(status, wanted.bytes, wanted.sha256, wanted.source_id)


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


# -- one file --------------------------------------------------------------------------------


def partial_path(wanted: PlannedModel, staging: Path | None) -> Path:
    dest = Path(wanted.dest)
    return (staging or dest.parent) / (dest.name + ".partial")


class HashMismatch(PodforgeError):
    """A whole download whose sha256 is not the expected one."""

    def __init__(self, digest: str) -> None:
        super().__init__(digest)
        self.digest = digest


def _cause(error: Exception) -> str | None:
    return str(error) if isinstance(error, Retryable) else None


def fetch_one(
    wanted: PlannedModel,
    remote: Remote,
    sources: Sources,
    progress: Progress,
    staging: Path | None = None,
    connections: int = CONNECTIONS,
    backoff: Backoff = FETCH_BACKOFF,
) -> str:
    """Bring one file into place; returns "present" or "fetched". Raises FetchError."""
    dest = Path(wanted.dest)
    with open(dest.with_name(dest.name + ".lock"), "a") as lock:
        # Blocks while another fetcher (this pod or another on the volume) has the file.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_current(wanted):
            return "present"
        partial = partial_path(wanted, staging)
        partial.parent.mkdir(parents=True, exist_ok=True)
        download = Download(wanted, remote, sources, partial, progress, backoff)
        if remote.xet_hash and sources.xet and _hf_xet() is None:
            progress.say(f"fetch: {dest.name}: hf_xet is not installed; plain HTTP")

        def verified() -> str:
            if remote.xet_hash and sources.xet and _hf_xet() is not None:
                digest = download.through_xet()
            elif connections_for(remote.size, connections) > 1 and download.ranges_accepted():
                digest = download.in_ranges(connections_for(remote.size, connections))
            else:
                digest = download.in_one_stream()
            if remote.sha256 is not None and digest != remote.sha256:
                partial.unlink()
                raise HashMismatch(digest)
            return digest

        def say_retry(cause: str, delay: float) -> None:
            progress.say(
                f"fetch: {dest.name}: {cause}; retrying from {_size(partial)} in {delay:.1f} s"
            )

        try:
            try:
                digest = retrying(verified, _cause, backoff, say_retry)
            except HashMismatch as first:
                # Bytes that arrived whole but wrong are no network fault: once more from
                # scratch (a corrupted transfer), then stop (the source serves another file).
                progress.say(
                    f"fetch: {dest.name}: sha256 {first.digest} is not the expected"
                    f" {remote.sha256}; fetching it once more from scratch"
                )
                try:
                    digest = retrying(verified, _cause, backoff, say_retry)
                except HashMismatch as second:
                    raise FetchError(
                        f"sha256 differs twice ({first.digest}, then {second.digest}), expected"
                        f" {remote.sha256}: the source serves another file than the entry names"
                    ) from None
        except GaveUp as error:
            raise FetchError(f"gave up after {error.attempts} attempts: {error}") from None
        _publish(partial, dest)
        stamps.write_stamp(wanted.dest, digest, wanted.source_id)
        return "fetched"


def _expected(wanted: PlannedModel, sources: Sources, backoff: Backoff, out: TextIO) -> Remote:
    """The source's size and sha256, checked against what the entry says."""

    def say_retry(cause: str, delay: float) -> None:
        out.write(f"fetch: asking for {wanted.label}: {cause}; again in {delay:.1f} s\n")
        out.flush()

    try:
        remote = retrying(lambda: sources.remote(wanted), _cause, backoff, say_retry)
    except GaveUp as error:
        raise FetchError(
            f"asking for {wanted.label} failed {error.attempts} times: {error}"
        ) from None
    if wanted.bytes is not None and wanted.bytes != remote.size:
        raise FetchError(f"the source says {remote.size} bytes, the entry expects {wanted.bytes}")
    if wanted.sha256 is not None and remote.sha256 not in (None, wanted.sha256):
        raise FetchError(f"the source's sha256 {remote.sha256} differs from {wanted.sha256}")
    return dataclasses.replace(remote, sha256=wanted.sha256 or remote.sha256)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _allocated(path: Path) -> int:
    """Bytes the file holds on disk (a ranged download's partial is sparse until done)."""
    try:
        return path.stat().st_blocks * 512
    except FileNotFoundError:
        return 0


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as written:
        buffer = memoryview(bytearray(4 * CHUNK))
        while count := written.readinto(buffer):
            digest.update(buffer[:count])
    return digest.hexdigest()


class Download:
    """One attempt at one file's bytes into its partial file; each way returns their sha256."""

    def __init__(
        self,
        wanted: PlannedModel,
        remote: Remote,
        sources: Sources,
        partial: Path,
        progress: Progress,
        backoff: Backoff,
    ) -> None:
        self.wanted, self.remote, self.sources = wanted, remote, sources
        self.partial, self.progress, self.backoff = partial, progress, backoff
        self.name = Path(wanted.dest).name
        self.record = partial.with_name(partial.name + ".ranges")

    def in_one_stream(self) -> str:
        """Append to the partial file until it holds the whole file."""
        size = self.remote.size
        digest = hashlib.sha256()
        if self.record.exists():  # a ranged download's sparse file: no prefix to trust
            self.partial.unlink(missing_ok=True)
            self.record.unlink()
        have = _size(self.partial)
        if have > size:
            self.partial.unlink()
            have = 0
        with open(self.partial, "ab+") as out:
            out.seek(0)
            for block in iter(lambda: out.read(CHUNK), b""):
                digest.update(block)
            if have < size:
                response = self.sources.open(self.wanted, self.remote, start=have)
                if have and response.status != 206:
                    # The server ignored Range: start over rather than append the whole file.
                    out.truncate(0)
                    digest, have = hashlib.sha256(), 0
                self.progress.advance(self.name, have, size, have)
                buffer = memoryview(bytearray(4 * CHUNK))  # reused: no allocation per block
                try:
                    with response:
                        while count := response.readinto(buffer):
                            block = buffer[:count]
                            out.write(block)
                            digest.update(block)
                            have += count
                            self.progress.advance(self.name, have, size, count)
                except (http.client.HTTPException, OSError) as error:
                    out.flush()
                    raise Retryable(f"connection lost at byte {have}: {error}") from None
            # No fsync: the stamp records size and mtime, so a file a crash left short or
            # stale is fetched again; forcing GBs to disk would halve throughput.
            out.flush()
        if have != size:
            raise Retryable(f"short body: {have} of {size} bytes")
        return digest.hexdigest()

    def ranges_accepted(self) -> bool:
        """Whether the server answers a byte range with 206 (asked for the first byte)."""
        with self.sources.open(self.wanted, self.remote, 0, 0) as response:
            accepted = response.status == 206
        if not accepted:
            self.progress.say(f"fetch: {self.name}: the server ignores byte ranges: one connection")
        return accepted

    def in_ranges(self, connections: int) -> str:
        """Pieces over ``connections`` connections, each written at its offset; the sha256
        follows the written prefix meanwhile, so little is left to hash at the end."""
        size = self.remote.size
        written = 0
        if not self.record.exists():
            written = _size(self.partial)  # a one-stream partial: all of it good
            if written >= size:
                self.partial.unlink(missing_ok=True)
                written = 0
        ranges = Ranges.resume_or_split(self.record, size, self.wanted.source_id, written)
        with open(self.partial, "r+b" if self.partial.exists() else "w+b") as out:
            out.truncate(size)
            done = size - ranges.missing
            self.progress.advance(self.name, done, size, done)
            stopping = threading.Event()
            failures: list[BaseException] = []
            digest = hashlib.sha256()

            def connection() -> None:
                while not stopping.is_set() and (part := ranges.take()) is not None:
                    try:
                        retrying(
                            lambda: self._fetch_range(out.fileno(), ranges, part, stopping),
                            _cause,
                            self.backoff,
                            lambda cause, delay: self.progress.say(
                                f"fetch: {self.name}: {cause}; retrying bytes "
                                f"{part.next}-{part.end - 1} in {delay:.1f} s"
                            ),
                            stopping,
                        )
                    except BaseException as error:  # noqa: BLE001 - raised after the join
                        failures.append(error)
                        stopping.set()
                    finally:
                        ranges.release(part)

            def follow() -> None:
                hashed = 0
                while hashed < size and not stopping.is_set():
                    ready = ranges.wait_past(hashed, timeout=1.0)
                    while hashed < ready:
                        block = os.pread(out.fileno(), min(4 * CHUNK, ready - hashed), hashed)
                        digest.update(block)
                        hashed += len(block)

            threads = [threading.Thread(target=connection) for _ in range(connections)]
            hasher = threading.Thread(target=follow)
            for thread in [*threads, hasher]:
                thread.start()
            for thread in threads:
                thread.join()
            if failures or ranges.missing:
                stopping.set()
            hasher.join()
        ranges.save()
        if failures:
            if isinstance(failures[0], GaveUp):
                raise FetchError(
                    f"gave up after {failures[0].attempts} attempts: {failures[0]}"
                ) from None
            raise failures[0]
        if ranges.missing:
            raise Retryable(f"{ranges.missing} bytes were left unwritten")
        self.record.unlink()
        return digest.hexdigest()

    def _fetch_range(self, fd: int, ranges: Ranges, part: Range, stopping: threading.Event) -> None:
        """Fetch what is left of ``part``; it may shrink meanwhile (another connection took
        its far half)."""
        response = self.sources.open(self.wanted, self.remote, part.next, part.end - 1)
        if response.status != 206:
            response.close()
            raise FetchError(f"{self.wanted.label}: the server ignored a byte range")
        buffer = memoryview(bytearray(CHUNK))
        try:
            with response:
                while not stopping.is_set():
                    count = response.readinto(buffer)
                    if not count:
                        break
                    own = ranges.allowed(part, count)
                    written = 0
                    while written < own:
                        written += os.pwrite(fd, buffer[written:own], part.next + written)
                    more = ranges.wrote(part, own)
                    self.progress.advance(self.name, ranges.size - ranges.missing, ranges.size, own)
                    if not more or own < count:
                        return  # this range is done (or its far half went to another)
        except (http.client.HTTPException, OSError) as error:
            raise Retryable(f"connection lost at byte {part.next}: {error}") from None
        if part.left and not stopping.is_set():
            raise Retryable(f"short body: bytes {part.next}-{part.end - 1} missing")

    def through_xet(self) -> str:
        """Reconstruct the file through hf_xet.

        hf_xet gets its CAS token from the hub's refresh URL with our HF token in a header; it
        writes terms at their offsets, so a killed Xet download starts over (its chunk cache,
        not a partial file, is what it reuses).
        """
        hf_xet = _hf_xet()
        remote, name = self.remote, self.name
        self.partial.unlink(missing_ok=True)
        reported = 0

        def report(group: Any, _items: Any) -> None:
            nonlocal reported
            done = group.total_bytes_completed
            self.progress.advance(name, done, remote.size, done - reported)
            reported = done

        try:
            with self.sources.xet_session().new_file_download_group(
                token_refresh_url=remote.xet_refresh_url,
                token_refresh_headers={"User-Agent": "podforge-fetch", **self.sources.hf_auth()},
                progress_callback=report,
            ) as group:
                group.start_download_file(
                    hf_xet.XetFileInfo(remote.xet_hash, remote.size), str(self.partial)
                )
        except hf_xet.XetAuthenticationError as error:
            raise FetchError(
                f"Xet storage refused the token (gated repo: set HF_TOKEN): {error}"
            ) from None
        except hf_xet.XetObjectNotFoundError as error:
            raise FetchError(f"Xet storage has no file {remote.xet_hash}: {error}") from None
        except (RuntimeError, OSError) as error:
            raise Retryable(f"Xet download failed: {error}") from None
        if reported < remote.size:
            self.progress.advance(name, remote.size, remote.size, remote.size - reported)
        if (have := _size(self.partial)) != remote.size:
            raise Retryable(f"Xet wrote {have} of {remote.size} bytes")
        return _sha256_of(self.partial)


def _hf_xet() -> Any:
    """The hf_xet module where installed (huggingface_hub brings it on x86_64 and arm64)."""
    try:
        import hf_xet  # noqa: PLC0415 - optional: no wheel for every machine
    except ImportError:
        return None
    return hf_xet


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


def disk_shortfall(todo: list[tuple[PlannedModel, int]], staging: Path | None) -> str | None:
    """None when the files fit where they download; otherwise how much is needed and free."""
    need = sum(size - _allocated(partial_path(w, staging)) for w, size in todo)
    probe = staging or Path(todo[0][0].dest).parent
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if need <= free:
        return None
    return f"{need / 1e9:.2f} GB needed under {probe}, {free / 1e9:.2f} GB free"


def fetch_all(
    manifest: list[PlannedModel],
    sources: Sources,
    concurrency: int = 4,
    connections: int = CONNECTIONS,
    staging: Path | None = None,
    out: TextIO = sys.stderr,
    backoff: Backoff = FETCH_BACKOFF,
) -> dict[str, str]:
    """Fetch every missing or wrong file; returns dest -> "present" | "fetched".

    Raises FetchError naming each file that failed and why.
    """
    results = {w.dest: "present" for w in manifest if is_current(w)}
    missing = [w for w in manifest if w.dest not in results]
    if not missing:
        return results
    failures: list[str] = []
    expected: dict[str, Remote] = {}
    if staging is not None and staging.exists() and not staging.is_dir():
        raise FetchError(f"--staging {staging} is a file, not a directory; nothing was downloaded")
    # Asked together: a manifest of thousands against a slow host takes minutes, not hours.
    with ThreadPoolExecutor(max_workers=min(ASKING_AT_ONCE, len(missing))) as pool:
        asked = {w.dest: pool.submit(_expected, w, sources, backoff, out) for w in missing}
        for dest, future in asked.items():
            try:
                expected[dest] = future.result()
            except FetchError as error:
                failures.append(f"{dest}: {error}")
    if failures:
        raise FetchError("; ".join(failures))
    for w in missing:
        try:
            Path(w.dest).parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise FetchError(f"{w.dest}: cannot make its directory: {error.strerror}") from None
    shortfall = disk_shortfall([(w, expected[w.dest].size) for w in missing], staging)
    if shortfall:
        raise FetchError(f"not enough disk space: {shortfall}; nothing was downloaded")
    progress = Progress(sum(remote.size for remote in expected.values()), out)
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = {
            w.dest: pool.submit(
                fetch_one, w, expected[w.dest], sources, progress, staging, connections, backoff
            )
            for w in missing
        }
        for dest, future in futures.items():
            try:
                results[dest] = future.result()
            except FetchError as error:
                failures.append(f"{dest}: {error}")
    if failures:
        raise FetchError("; ".join(failures))
    return results
