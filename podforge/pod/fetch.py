"""Pod-side model fetcher: ``python -m podforge fetch MANIFEST``.

Downloads what is missing or wrong, several files at once; resumes from a ``.partial``
file across processes (huggingface_hub 2.x does not); retries resets, 5xx and short
bodies with exponential backoff; checks size and sha256 before an atomic rename, so no
partial or wrong file ever sits at a final path; writes a verification stamp so later runs
never hash again. A per-file ``flock`` keeps two fetchers on a shared volume from fetching
the same file; the kernel drops it when a fetcher dies, so a stale lock is simply free.
Where the hub offers Xet storage (``X-Xet-Hash`` on HEAD) and ``hf_xet`` is installed, the
file's bytes come through hf_xet instead of one HTTP stream; the same size and sha256 checks
apply. The HF token comes from the ``HF_TOKEN`` environment variable, never a command line.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import http.client
import json
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

from podforge.pod import stamps
from podforge.pod.retry import Backoff, GaveUp, retrying

CHUNK = 1 << 20
# A reset, a 5xx or a short body is tried again from the partial file: 6 tries in all.
FETCH_BACKOFF = Backoff(attempts=6)


class FetchError(RuntimeError):
    """A file that could not be fetched; the message names it and says why."""


class Retryable(Exception):
    """A transient failure (reset, 5xx, short body): try again from the partial file."""


@dataclass(frozen=True)
class Remote:
    """What the hub's HEAD says about a file."""

    size: int
    sha256: str | None
    xet_hash: str | None = None  # set when the hub offers the file through Xet storage
    xet_refresh_url: str | None = None  # where hf_xet gets (and renews) its CAS token


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


REQUIRED_FIELDS = ("repo", "path", "dest")  # non-empty strings
OPTIONAL_FIELDS = {
    "revision": (str, "a string"),
    "bytes": (int, "an integer"),
    "sha256": (str, "a string"),
}


def read_manifest(path: Path) -> list[dict[str, Any]]:
    """The manifest file's entries; a FetchError naming the file, entry and field otherwise."""
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise FetchError(f"manifest {path}: cannot read it as JSON ({error})") from None
    if not isinstance(entries, list):
        raise FetchError(f"manifest {path}: expected a JSON list of files")
    for index, entry in enumerate(entries):
        where = f"manifest {path}, entry {index}"
        if not isinstance(entry, dict):
            raise FetchError(f"{where}: expected an object with repo, path and dest")
        for field in REQUIRED_FIELDS:
            if not isinstance(entry.get(field), str) or not entry[field]:
                raise FetchError(f"{where}: {field!r} is missing or not a string")
        for field, (kind, described) in OPTIONAL_FIELDS.items():
            if entry.get(field) is not None and not isinstance(entry[field], kind):
                raise FetchError(f"{where}: {field!r} must be {described}")
        if not Path(entry["dest"]).is_absolute():
            raise FetchError(f"{where}: 'dest' must be an absolute path, got {entry['dest']!r}")
    return entries


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


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """HEAD must read the hub's own answer (X-Linked-*, X-Xet-*), not the CDN's it points to."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Hub:
    def __init__(
        self, endpoint: str, token: str | None, timeout: float = 30.0, xet: bool = True
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.xet = xet  # False: plain HTTP even where the hub offers Xet (HF_HUB_DISABLE_XET)
        self._head_opener = urllib.request.build_opener(_NoRedirect)
        self._opener = urllib.request.build_opener()
        self._xet_session: Any = None
        self._xet_lock = threading.Lock()

    def url(self, wanted: Wanted) -> str:
        quoted = urllib.parse.quote(wanted.path)
        return f"{self.endpoint}/{wanted.repo}/resolve/{wanted.revision}/{quoted}"

    def xet_session(self) -> Any:
        """One hf_xet session (runtime and connection pool) shared by this fetcher's threads."""
        with self._xet_lock:
            if self._xet_session is None:
                self._xet_session = _hf_xet().XetSession()
            return self._xet_session

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def open(self, wanted: Wanted, method: str = "GET", start: int = 0) -> Any:
        headers = {"User-Agent": "podforge-fetch", **self.auth()}
        if start:
            headers["Range"] = f"bytes={start}-"
        request = urllib.request.Request(self.url(wanted), headers=headers, method=method)
        opener = self._head_opener if method == "HEAD" else self._opener
        try:
            return opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as error:
            if method == "HEAD" and 300 <= error.code < 400:
                return error  # a redirect to the CDN: its headers are the hub's answer
            if error.code >= 500 or error.code == 429:
                raise Retryable(f"HTTP {error.code}") from None
            hint = " (gated repo: set HF_TOKEN)" if error.code in (401, 403) else ""
            raise FetchError(f"HTTP {error.code} from the hub{hint}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            raise Retryable(str(error)) from None

    def remote(self, wanted: Wanted) -> Remote:
        """HEAD: X-Linked-Size / X-Linked-Etag for LFS files, X-Xet-Hash for Xet files."""
        with self.open(wanted, "HEAD") as response:
            headers = response.headers
            size = headers.get("X-Linked-Size") or headers["Content-Length"]
            etag = (headers.get("X-Linked-Etag") or "").strip('"') or None
            xet_hash = headers.get("X-Xet-Hash")
            refresh = _link(headers.get_all("Link") or [], "xet-auth")
            refresh = refresh or headers.get("X-Xet-Refresh-Route")
        return Remote(
            size=int(size),
            sha256=etag if etag and len(etag) == 64 else None,
            xet_hash=xet_hash if xet_hash and refresh else None,
            xet_refresh_url=urllib.parse.urljoin(self.endpoint + "/", refresh) if refresh else None,
        )


def _link(values: list[str], rel: str) -> str | None:
    """The URL of ``rel`` in HTTP Link headers (``<url>; rel="xet-auth", ...``)."""
    for value in values:
        for part in value.split(","):
            url, _, params = part.partition(";")
            if f'rel="{rel}"' in params.replace(" ", "") or f"rel={rel}" in params:
                return url.strip().strip("<>")
    return None


# -- one file --------------------------------------------------------------------------------


def partial_path(wanted: Wanted, staging: Path | None) -> Path:
    """Where a download grows: beside the target, or on local disk for a slow volume."""
    return (staging or wanted.dest.parent) / (wanted.dest.name + ".partial")


def _cause(error: Exception) -> str | None:
    return str(error) if isinstance(error, Retryable) else None


def fetch_one(
    wanted: Wanted,
    remote: Remote,
    hub: Hub,
    progress: Progress,
    staging: Path | None = None,
    backoff: Backoff = FETCH_BACKOFF,
) -> str:
    """Bring one file into place; returns "present" or "fetched". Raises FetchError."""
    with open(wanted.dest.with_name(wanted.dest.name + ".lock"), "a") as lock:
        # Blocks while another fetcher (this pod or another on the volume) has the file.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_current(wanted):
            return "present"
        partial = partial_path(wanted, staging)
        partial.parent.mkdir(parents=True, exist_ok=True)
        download = _download
        if remote.xet_hash and hub.xet:
            if _hf_xet() is not None:
                download = _download_xet
            else:
                progress.say(f"fetch: {wanted.dest.name}: hf_xet is not installed; plain HTTP")

        def verified_download() -> str:
            digest = download(wanted, hub, partial, remote, progress)
            if remote.sha256 is not None and digest != remote.sha256:
                partial.unlink()
                raise Retryable(f"sha256 {digest} does not match the expected {remote.sha256}")
            return digest

        def say_retry(cause: str, delay: float) -> None:
            progress.say(
                f"fetch: {wanted.dest.name}: {cause}; retrying from {_size(partial)}"
                f" in {delay:.1f} s"
            )

        try:
            digest = retrying(verified_download, _cause, backoff, say_retry)
        except GaveUp as error:
            raise FetchError(f"gave up after {error.attempts} attempts: {error}") from None
        _publish(partial, wanted.dest)
        stamps.write_stamp(str(wanted.dest), digest)
        return "fetched"


def _expected(wanted: Wanted, hub: Hub, backoff: Backoff) -> Remote:
    try:
        remote = retrying(lambda: hub.remote(wanted), _cause, backoff, lambda *_: None)
    except GaveUp as error:
        raise FetchError(f"HEAD failed after {error.attempts} attempts: {error}") from None
    if wanted.bytes is not None and wanted.bytes != remote.size:
        raise FetchError(f"the hub says {remote.size} bytes, the catalog expects {wanted.bytes}")
    if wanted.sha256 is not None and remote.sha256 not in (None, wanted.sha256):
        raise FetchError(
            f"the hub's sha256 {remote.sha256} differs from the catalog's {wanted.sha256}"
        )
    return dataclasses.replace(remote, sha256=wanted.sha256 or remote.sha256)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _download(wanted: Wanted, hub: Hub, partial: Path, remote: Remote, progress: Progress) -> str:
    """Append to ``partial`` until it holds the whole file; its sha256."""
    size = remote.size
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


def _hf_xet() -> Any:
    """The hf_xet module where installed (huggingface_hub brings it on x86_64 and arm64)."""
    try:
        import hf_xet
    except ImportError:
        return None
    return hf_xet


def _download_xet(
    wanted: Wanted, hub: Hub, partial: Path, remote: Remote, progress: Progress
) -> str:
    """Reconstruct the file into ``partial`` through hf_xet; its sha256.

    hf_xet gets its CAS token from the hub's refresh URL with our HF token in a header; it
    writes terms at their offsets, so a killed Xet download starts over (its chunk cache,
    not a partial file, is what it reuses).
    """
    hf_xet = _hf_xet()
    partial.unlink(missing_ok=True)
    reported = 0

    def report(group: Any, _items: Any) -> None:
        nonlocal reported
        done = group.total_bytes_completed
        progress.advance(wanted.dest.name, done, remote.size, done - reported)
        reported = done

    try:
        with hub.xet_session().new_file_download_group(
            token_refresh_url=remote.xet_refresh_url,
            token_refresh_headers={"User-Agent": "podforge-fetch", **hub.auth()},
            progress_callback=report,
        ) as group:
            group.start_download_file(
                hf_xet.XetFileInfo(remote.xet_hash, remote.size), str(partial)
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
        progress.advance(wanted.dest.name, remote.size, remote.size, remote.size - reported)
    if (have := _size(partial)) != remote.size:
        raise Retryable(f"Xet wrote {have} of {remote.size} bytes")
    digest = hashlib.sha256()
    with open(partial, "rb") as written:
        buffer = memoryview(bytearray(4 * CHUNK))
        while count := written.readinto(buffer):
            digest.update(buffer[:count])
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
    backoff: Backoff = FETCH_BACKOFF,
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
    expected: dict[Wanted, Remote] = {}
    for w in missing:
        try:
            expected[w] = _expected(w, hub, backoff)
        except FetchError as error:
            failures.append(f"{w.dest}: {error}")
    if failures:
        raise FetchError("; ".join(failures))
    for w in missing:
        w.dest.parent.mkdir(parents=True, exist_ok=True)
    shortfall = disk_shortfall([(w, expected[w].size) for w in missing], staging)
    if shortfall:
        raise FetchError(f"not enough disk space: {shortfall}; nothing was downloaded")
    progress = Progress(sum(remote.size for remote in expected.values()), out)
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = {
            w: pool.submit(fetch_one, w, expected[w], hub, progress, staging, backoff)
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
