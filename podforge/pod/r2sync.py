"""`podforge r2sync`: ComfyUI's outputs to R2, every finished file exactly once.

    podforge r2sync --watch /workspace/ComfyUI/output [--watch DIR ...] [--journal PATH]
                    [--settle SECONDS] [--once | --test]

Plain Python with boto3 (no pyinfra), run on the pod. A sqlite journal (WAL) records each
file's identity (path, size, mtime, sha256), its state and, for a multipart upload, the
upload id and every finished part's ETag, so a restart after a kill, a reboot or an outage
uploads what is missing and nothing twice. Credentials come from the environment or a 0600
file (R2_ENV_FILE) and are never printed.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import json
import os
import random
import signal
import socket
import sqlite3
import stat
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from podforge.core.errors import PodforgeError
from podforge.core.keys import (
    DEFAULT_LAYOUT,
    INDEX_NAME,
    LayoutError,
    check_layout,
    index_key,
    numbered,
    object_key,
    pod_part,
)
from podforge.pod.retry import Backoff, GaveUp, retrying
from podforge.secrets import SecretFileError, env_file

MIB = 2**20
# R2: parts of 5 MiB to 5 GiB, at most 10,000, all but the last of one size
# (docs/facts.md#r2-and-s3).
MIN_PART = 8 * MIB
MAX_PARTS = 10_000
MULTIPART_FROM = 32 * MIB
DEFAULT_BUCKET = "runpod"
REQUIRED = ("R2_ENDPOINT", "R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY")
PROBE_PREFIX = "podforge-probe/"
RESCAN_SECONDS = 3.0

T = TypeVar("T")


class SyncError(PodforgeError, RuntimeError):
    """Why a file (or the whole sync) failed; one line, never a secret."""


class Fatal(SyncError):
    """Retrying cannot help: credentials, the bucket, the settings."""


@dataclass(frozen=True)
class R2Settings:
    endpoint: str
    bucket: str
    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    layout: str = DEFAULT_LAYOUT
    pod_name: str | None = None  # the inventory's, for {pod} off RunPod


def r2_settings(environ: Mapping[str, str]) -> R2Settings:
    """R2_* from the environment, or from the 0600 file R2_ENV_FILE names."""
    try:
        values = (
            env_file(environ["R2_ENV_FILE"], "R2_ENV_FILE") if environ.get("R2_ENV_FILE") else {}
        )
    except SecretFileError as error:
        raise Fatal(str(error)) from None
    values.update({name: value for name, value in environ.items() if name.startswith("R2_")})
    missing = [name for name in REQUIRED if not values.get(name)]
    if missing:
        raise Fatal(f"{', '.join(missing)} not set (in the environment or R2_ENV_FILE)")
    if not values["R2_ENDPOINT"].startswith(("https://", "http://")):
        raise Fatal("R2_ENDPOINT is not accepted: expected an https:// URL")
    try:
        layout = check_layout(values.get("R2_KEY_LAYOUT") or DEFAULT_LAYOUT)
    except LayoutError as error:
        raise Fatal(f"R2_KEY_LAYOUT is not accepted: {error}") from None
    return R2Settings(
        endpoint=values["R2_ENDPOINT"],
        bucket=values.get("R2_BUCKET") or DEFAULT_BUCKET,
        access_key_id=values["R2_ACCESS_KEY_ID"],
        secret_access_key=values["R2_SECRET_ACCESS_KEY"],
        layout=layout,
        pod_name=values.get("R2_POD_NAME") or None,
    )


def pod_identity(environ: Mapping[str, str], settings: R2Settings) -> str:
    """{pod} of the keys: RunPod's pod id, else the inventory's pod name, else the host name;
    each stays the same across restarts of that pod."""
    name = environ.get("RUNPOD_POD_ID") or settings.pod_name or socket.gethostname()
    try:
        return pod_part(name)
    except LayoutError as error:
        raise Fatal(f"the pod's name cannot be used in keys: {error}") from None


def make_client(settings: R2Settings) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=settings.endpoint,
        aws_access_key_id=settings.access_key_id,
        aws_secret_access_key=settings.secret_access_key,
        region_name="auto",
        config=Config(
            # boto3 >= 1.36 sends CRC32 checksums R2 rejects (docs/facts.md#r2-and-s3).
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"total_max_attempts": 1},  # retries are ours: backoff, jitter, outages
            connect_timeout=10,
            read_timeout=120,
            max_pool_connections=16,
        ),
    )


# -- errors: which to retry ------------------------------------------------------------------

_CREDENTIAL_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "InvalidToken",
    "Unauthorized",
}
_RETRY_CODES = {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "503"}


def classify(error: BaseException, bucket: str) -> tuple[str, str]:
    """("fatal" | "retry" | "fail", the cause in words)."""
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        if code in _CREDENTIAL_CODES or status in (401, 403):
            return "fatal", (
                f"R2 refused the credentials ({code or status}): check R2_ACCESS_KEY_ID and "
                "R2_SECRET_ACCESS_KEY"
            )
        if code == "NoSuchBucket":
            return "fatal", f"the bucket {bucket!r} does not exist (R2_BUCKET)"
        if code in _RETRY_CODES or status >= 500 or status == 429:
            return "retry", f"R2 answered {status} {code}"
        return (
            "fail",
            f"R2 answered {status} {code}: {error.response.get('Error', {}).get('Message', '')}",
        )
    if isinstance(error, (BotoCoreError, OSError)):
        return "retry", f"the endpoint is unreachable ({type(error).__name__})"
    return "fail", f"{type(error).__name__}: {error}"


@dataclass
class Retry:
    """R2 calls tried again (retry.retrying) while ``classify`` says retrying can help:
    ``budget``: seconds of retrying after the first failure (None: until stopped)."""

    bucket: str
    budget: float | None
    stopping: threading.Event
    say: Callable[[str], None]

    def __call__(self, what: str, call: Callable[[], T]) -> T:
        def cause_of(error: Exception) -> str | None:
            if isinstance(error, KeyTaken):
                return None  # not the network's doing: the caller picks another key
            kind, cause = classify(error, self.bucket)
            if kind == "fatal":
                raise Fatal(cause) from None
            if kind == "fail":
                raise SyncError(f"{what}: {cause}") from None
            return cause

        try:
            return retrying(
                call,
                cause_of,
                Backoff(attempts=None, budget_s=self.budget),
                lambda cause, delay: self.say(
                    f"r2sync: {what}: {cause}; retrying in {delay:.0f} s"
                ),
                self.stopping,
            )
        except GaveUp as error:
            raise SyncError(f"{what}: {error.cause}") from None


# -- the journal -----------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    sha256 TEXT, key TEXT NOT NULL, state TEXT NOT NULL,   -- uploading | done
    upload_id TEXT, part_size INTEGER, uploaded_at TEXT);
CREATE TABLE IF NOT EXISTS parts (
    path TEXT NOT NULL, number INTEGER NOT NULL, etag TEXT NOT NULL,
    PRIMARY KEY (path, number));
CREATE TABLE IF NOT EXISTS index_entries (
    index_key TEXT NOT NULL, key TEXT NOT NULL, entry TEXT NOT NULL, listed INTEGER NOT NULL,
    PRIMARY KEY (index_key, key));
"""
# Columns added since: each file's index object and the ETag of what this pod wrote at its
# key (an edit replaces exactly that object, nothing another writer put there).
ADDED_COLUMNS = {"files": ("index_key TEXT", "etag TEXT")}


class Journal:
    """sqlite in WAL mode; every step is committed before the next network call."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
            for table, columns in ADDED_COLUMNS.items():
                have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
                for column in columns:
                    if column.split()[0] not in have:
                        self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
            # A journal from before keys named the pod: its unlisted entries keep their index.
            if self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'day_entries'"
            ).fetchall():
                self._db.execute(
                    "INSERT OR IGNORE INTO index_entries SELECT 'outputs/' || day || '/"
                    + INDEX_NAME
                    + "', key, entry, listed FROM day_entries"
                )
                self._db.execute("DROP TABLE day_entries")

    def run(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def record(self, path: str) -> dict[str, Any] | None:
        names = (
            "size", "mtime_ns", "sha256", "key", "state", "upload_id", "part_size", "index_key",
            "etag",
        )  # fmt: skip
        rows = self.run(f"SELECT {', '.join(names)} FROM files WHERE path = ?", path)
        if not rows:
            return None
        record = dict(zip(names, rows[0], strict=True))
        # Written before keys named the pod: its day's list was outputs/<day>/metadata.json.
        record["index_key"] = record["index_key"] or f"outputs/{record['key'].split('/')[1]}/" + (
            INDEX_NAME
        )
        return record

    def start(
        self,
        path: str,
        size: int,
        mtime_ns: int,
        sha256: str,
        key: str,
        index_key: str,
        etag: str | None,
    ) -> None:
        """A new upload of ``path`` to ``key`` (``etag``: of this pod's own object there, which
        the upload may replace; None: the key must be free)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM parts WHERE path = ?", (path,))
            self._db.execute(
                "INSERT OR REPLACE INTO files (path, size, mtime_ns, sha256, key, state,"
                " index_key, etag) VALUES (?, ?, ?, ?, ?, 'uploading', ?, ?)",
                (path, size, mtime_ns, sha256, key, index_key, etag),
            )
            self._db.execute("COMMIT")

    def done(self, path: str, entry: dict[str, Any], index_key: str, etag: str | None) -> None:
        """The upload is in the bucket (``etag``: its ETag); its entry waits for the index."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "UPDATE files SET state = 'done', upload_id = NULL, uploaded_at = ?, etag = ?"
                " WHERE path = ?",
                (entry["uploaded_at"], etag, path),
            )
            self._db.execute("DELETE FROM parts WHERE path = ?", (path,))
            self._db.execute(
                "INSERT OR REPLACE INTO index_entries (index_key, key, entry, listed)"
                " VALUES (?, ?, ?, 0)",
                (index_key, entry["key"], json.dumps(entry, sort_keys=True)),
            )
            self._db.execute("COMMIT")


# -- which files are finished ----------------------------------------------------------------


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


# -- uploading -------------------------------------------------------------------------------


def part_size_for(size: int) -> int:
    """Equal parts of whole MiB, at least MIN_PART, at most MAX_PARTS of them."""
    needed = -(-size // MAX_PARTS)
    return max(MIN_PART, -(-needed // MIB) * MIB)


def _digests(path: str) -> tuple[str, str]:
    """(sha256 hex, md5 base64) of the file, read once."""
    sha, md5 = hashlib.sha256(), hashlib.md5()  # noqa: S324 - Content-MD5 is what S3 checks
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(4 * MIB), b""):
            sha.update(block)
            md5.update(block)
    return sha.hexdigest(), base64.b64encode(md5.digest()).decode()


def _read_part(path: str, number: int, part_size: int) -> bytes:
    with open(path, "rb") as file:
        file.seek((number - 1) * part_size)
        return file.read(part_size)


@dataclass
class Syncer:
    settings: R2Settings
    client: Any
    journal: Journal
    watch: list[Path]
    settle: float
    retry: Retry
    stopping: threading.Event
    journal_path: Path
    pod: str
    gpu: str
    say: Callable[[str], None] = print
    concurrency: int = 4
    # Whether the store honours If-None-Match / If-Match (R2 and S3 do; rclone does not):
    # asked once, before the first upload (``conditional_writes``).
    conditional: bool | None = None

    def _skip(self) -> set[str]:
        base = str(self.journal_path)
        return {base, base + "-wal", base + "-shm", base + "-journal"}

    def pending(self) -> tuple[list[Candidate], int]:
        """(finished files whose current bytes are not in the bucket, unfinished count)."""
        writing = files_open_for_writing()
        now_ns = time.time_ns()
        ready, unfinished = [], 0
        for candidate in scan(self.watch, self._skip()):
            record = self.journal.record(candidate.path)
            if (
                record is not None
                and record["state"] == "done"
                and (record["size"], record["mtime_ns"]) == (candidate.size, candidate.mtime_ns)
            ):
                continue
            settled = now_ns - candidate.mtime_ns >= self.settle * 1e9
            if not settled or candidate.path in writing:
                unfinished += 1
                continue
            ready.append(candidate)
        return ready, unfinished

    def sync(self, ready: list[Candidate]) -> dict[str, str]:
        """Upload ``ready``; the failures, path -> cause."""
        failures: dict[str, str] = {}
        if ready and self.conditional is None:
            self.conditional = conditional_writes(self.settings, self.client, self.retry, self.pod)
            if not self.conditional:
                self.say(
                    f"r2sync: {self.settings.endpoint} ignores conditional writes: each upload"
                    " HEADs its key first (a writer between that HEAD and the PUT can still be"
                    " overwritten)"
                )
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            outcomes = {c.path: pool.submit(self.upload, c) for c in ready}
        for path, outcome in outcomes.items():
            error = outcome.exception()
            if isinstance(error, Fatal):
                raise error
            if error is not None:
                failures[path] = str(error)
        failures.update(self.publish_indexes())
        return failures

    def upload(self, candidate: Candidate) -> None:
        if self.stopping.is_set():
            return
        path = candidate.path
        record = self.journal.record(path)
        same_file = record is not None and (record["size"], record["mtime_ns"]) == (
            candidate.size,
            candidate.mtime_ns,
        )
        md5: str | None = None  # known when the file is read here; a resumed upload re-reads
        if same_file and record is not None and record["state"] == "uploading":
            sha256 = record["sha256"]
            if self._ours_there(record["key"], candidate.size, sha256):
                return self._finish(candidate, record, None)  # up before a kill, not journaled
        else:
            if record is not None and record.get("upload_id"):
                self._abort(record["key"], record["upload_id"])  # the file changed meanwhile
            sha256, md5 = _digests(path)
            if os.stat(path).st_mtime_ns != candidate.mtime_ns:
                raise SyncError("changed while being read; taken again next round")
            if record is not None:
                # An edit: its key stays (the day of its first upload), replacing only the
                # object this pod wrote there.
                key, index, etag = record["key"], record["index_key"], record["etag"]
                etag = etag or self._etag_if_ours(key, record["sha256"])
            else:
                day = dt.datetime.now(dt.timezone.utc).date().isoformat()
                key = object_key(self.settings.layout, self.pod, day, candidate.relative)
                index, etag = index_key(self.settings.layout, self.pod, day), None
                if key == index:  # an output named like the index: it takes the next name
                    key = numbered(key, 2)
            self.journal.start(path, candidate.size, candidate.mtime_ns, sha256, key, index, etag)
            record = self.journal.record(path)
        assert record is not None
        for _ in range(MAX_NUMBERED):
            try:
                if candidate.size < MULTIPART_FROM:
                    answer = self._put(candidate, record, sha256, md5 or _digests(path)[1])
                else:
                    answer = self._multipart(candidate, record, sha256)
            except KeyTaken:
                record = self._next_free_key(candidate, record, sha256)
                if record["state"] == "done":
                    return None  # the bytes were ours, under a key found free before
                continue
            if answer is not None and not self.stopping.is_set():
                self._finish(candidate, record, answer.get("ETag"))
            return None
        raise SyncError(f"{record['key']} and {MAX_NUMBERED} numbered names are all taken")

    def _condition(self, record: dict[str, Any]) -> dict[str, str]:
        """What the store must find at the key for a write to go ahead: nothing, or exactly
        this pod's own object (an edit); refused with 412 otherwise."""
        if not self.conditional:
            return {}
        return {"IfMatch": record["etag"]} if record["etag"] else {"IfNoneMatch": "*"}

    def _check_before_writing(self, record: dict[str, Any], size: int, sha256: str) -> None:
        """Where the store ignores conditions: HEAD first (a window remains until the PUT)."""
        if self.conditional:
            return
        found = self._head(record["key"])
        if found is None:
            return
        if record["etag"] and found.get("ETag") == record["etag"]:
            return  # our own object: an edit replaces it
        if _holds(found, size, sha256):
            return  # these very bytes: put again, harmlessly
        raise KeyTaken(record["key"])

    def _next_free_key(
        self, candidate: Candidate, record: dict[str, Any], sha256: str
    ) -> dict[str, Any]:
        """Another writer holds the record's key: the first numbered name that is free or
        already holds these bytes (then the upload is done). The journal records it."""
        original = record["key"]
        for number in range(2, MAX_NUMBERED + 2):
            key = numbered(original, number)
            found = self._head(key)
            ours = _holds(found, candidate.size, sha256)
            if found is None or ours:
                break
        else:
            raise SyncError(f"{original} and {MAX_NUMBERED} numbered names are all taken")
        self.say(f"r2sync: {original} holds another writer's object; {candidate.relative} -> {key}")
        self.journal.start(
            candidate.path, candidate.size, candidate.mtime_ns, sha256, key, record["index_key"],
            None,
        )  # fmt: skip
        moved = self.journal.record(candidate.path)
        assert moved is not None
        if ours:
            self._finish(candidate, moved, found.get("ETag") if found else None)
            moved = {**moved, "state": "done"}
        return moved

    def _head(self, key: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        def head() -> dict[str, Any] | None:
            try:
                return self.client.head_object(Bucket=self.settings.bucket, Key=key)
            except ClientError as error:
                if error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                    return None
                raise

        return self.retry(f"HEAD {key}", head)

    def _ours_there(self, key: str, size: int, sha256: str) -> bool:
        return _holds(self._head(key), size, sha256)

    def _etag_if_ours(self, key: str, sha256: str | None) -> str | None:
        """The ETag of the object at ``key`` when it holds what this pod uploaded (a journal
        from before ETags were kept); None when the key is free or another's."""
        found = self._head(key)
        if found is not None and found.get("Metadata", {}).get("sha256") == sha256:
            return str(found["ETag"])
        return None

    def _put(
        self, candidate: Candidate, record: dict[str, Any], sha256: str, md5: str
    ) -> dict[str, Any]:
        self._check_before_writing(record, candidate.size, sha256)

        def put() -> Any:
            with open(candidate.path, "rb") as body:
                return self.client.put_object(
                    Bucket=self.settings.bucket,
                    Key=record["key"],
                    Body=body,
                    ContentMD5=md5,  # the server checks the bytes it stored
                    Metadata={"sha256": sha256},
                    **self._condition(record),
                )

        return self._conditional(f"PUT {candidate.relative}", record["key"], put)

    def _conditional(self, what: str, key: str, call: Callable[[], T]) -> T:
        """``call`` through the retry, a 412 (the condition failed) raised as KeyTaken."""
        from botocore.exceptions import ClientError

        def attempt() -> T:
            try:
                return call()
            except ClientError as error:
                if error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 412:
                    raise KeyTaken(key) from None
                raise

        return self.retry(what, attempt)

    def _multipart(
        self, candidate: Candidate, record: dict[str, Any], sha256: str
    ) -> dict[str, Any] | None:
        bucket, key = self.settings.bucket, record["key"]
        upload_id, part_size = record["upload_id"], record["part_size"]
        if upload_id is None:
            self._check_before_writing(record, candidate.size, sha256)
            part_size = part_size_for(candidate.size)
            created = self.retry(
                f"create multipart {candidate.relative}",
                lambda: self.client.create_multipart_upload(
                    Bucket=bucket, Key=key, Metadata={"sha256": sha256}
                ),
            )
            upload_id = created["UploadId"]
            self.journal.run(
                "UPDATE files SET upload_id = ?, part_size = ? WHERE path = ?",
                upload_id,
                part_size,
                candidate.path,
            )
        count = -(-candidate.size // part_size)
        done = dict(
            self.journal.run("SELECT number, etag FROM parts WHERE path = ?", candidate.path)
        )
        if done:
            self.say(f"r2sync: resuming {candidate.relative}: {len(done)}/{count} parts already up")
        for number in range(1, count + 1):
            if number in done:
                continue
            if self.stopping.is_set():
                return None  # the journal keeps upload id and parts: the next start resumes
            data = _read_part(candidate.path, number, part_size)
            md5 = base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324
            try:
                answer = self.retry(
                    f"part {number}/{count} of {candidate.relative}",
                    lambda data=data, number=number, md5=md5: self.client.upload_part(
                        Bucket=bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=data,
                        ContentMD5=md5,
                    ),
                )
            except SyncError:
                if self._upload_gone(bucket, key, upload_id):
                    self.journal.start(
                        candidate.path, candidate.size, candidate.mtime_ns, sha256, key,
                        record["index_key"], record["etag"],
                    )  # fmt: skip
                raise
            done[number] = answer["ETag"]
            self.journal.run(
                "INSERT OR REPLACE INTO parts (path, number, etag) VALUES (?, ?, ?)",
                candidate.path,
                number,
                answer["ETag"],
            )
        parts = [{"PartNumber": n, "ETag": done[n]} for n in sorted(done)]
        try:
            return self._conditional(
                f"complete {candidate.relative}",
                key,
                lambda: self.client.complete_multipart_upload(
                    Bucket=bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                    **self._condition(record),
                ),
            )
        except KeyTaken:
            self._abort(key, upload_id)  # its parts belong to the taken key: sent again
            raise

    def _upload_gone(self, bucket: str, key: str, upload_id: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)
        except ClientError as error:
            return error.response.get("Error", {}).get("Code") == "NoSuchUpload"
        except Exception:  # noqa: BLE001 - unreachable: keep the upload for next time
            return False
        return False

    def _abort(self, key: str, upload_id: str) -> None:
        self.retry(
            f"abort {key}",
            lambda: self.client.abort_multipart_upload(
                Bucket=self.settings.bucket, Key=key, UploadId=upload_id
            ),
        )

    def _finish(self, candidate: Candidate, record: dict[str, Any], etag: str | None) -> None:
        entry = {
            "key": record["key"],
            "size": candidate.size,
            "sha256": record["sha256"],
            "pod": self.pod,
            "gpu": self.gpu,
            "uploaded_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        if etag is None:  # found in place after a kill: its ETag from the store
            found = self._head(record["key"])
            etag = str(found["ETag"]) if found else None
        self.journal.done(candidate.path, entry, record["index_key"], etag)
        self.say(f"uploaded {record['key']} ({candidate.size} bytes)")

    def publish_indexes(self) -> dict[str, str]:
        """Merge this pod's new entries into each index object they belong in, then read it
        back: an entry is marked listed only once the bucket's copy shows it. Returns the
        indexes that failed (their entries stay unlisted and are tried again next round)."""
        failures: dict[str, str] = {}
        keys = [
            row[0]
            for row in self.journal.run(
                "SELECT DISTINCT index_key FROM index_entries WHERE listed = 0"
            )
        ]
        for key in keys:
            try:
                self._publish_index(key)
            except Fatal:
                raise
            except SyncError as error:
                failures[key] = str(error)
        return failures

    def _publish_index(self, key: str) -> None:
        """Read, merge, write back only if nobody wrote in between (If-Match on the ETag
        read, or If-None-Match for a new index), else read again: a compare-and-swap, so
        several writers of one index (the old layout's shared one, pods sharing a name)
        lose no entry."""
        ours = {
            row[0]: json.loads(row[1])
            for row in self.journal.run(
                "SELECT key, entry FROM index_entries WHERE index_key = ?", key
            )
        }
        for _ in range(INDEX_ATTEMPTS):
            listed, etag = self._read_index(key)
            merged = {entry["key"]: entry for entry in listed}
            merged.update(ours)
            body = json.dumps({"objects": [merged[k] for k in sorted(merged)]}, indent=2).encode()
            condition = (
                {} if not self.conditional else {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
            )
            try:
                self._conditional(
                    f"PUT {key}",
                    key,
                    lambda body=body, condition=condition: self.client.put_object(
                        Bucket=self.settings.bucket,
                        Key=key,
                        Body=body,
                        ContentType="application/json",
                        **condition,
                    ),
                )
            except KeyTaken:
                time.sleep(random.uniform(0.01, 0.2))  # another writer won: merge again
                continue
            break
        else:
            raise SyncError(f"{key}: {INDEX_ATTEMPTS} writers in a row won the index first")
        present = {entry["key"] for entry in self._read_index(key)[0]}
        for object_key_ in ours:
            if object_key_ in present:
                self.journal.run(
                    "UPDATE index_entries SET listed = 1 WHERE index_key = ? AND key = ?",
                    key,
                    object_key_,
                )

    def _read_index(self, key: str) -> tuple[list[dict[str, Any]], str | None]:
        """(its entries, its ETag) of an index object; ([], None) when there is none."""
        from botocore.exceptions import ClientError

        def get() -> tuple[list[dict[str, Any]], str | None]:
            try:
                answer = self.client.get_object(Bucket=self.settings.bucket, Key=key)
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    return [], None
                raise
            try:
                objects = json.loads(answer["Body"].read())["objects"]
            except (ValueError, KeyError, TypeError):
                raise SyncError(f"{key} is no r2sync index (written by something else)") from None
            return list(objects), answer.get("ETag")

        return self.retry(f"GET {key}", get)


def _holds(found: dict[str, Any] | None, size: int, sha256: str | None) -> bool:
    """Whether a HEAD answer is of an object holding these bytes (its size and the sha256
    r2sync put in its metadata)."""
    return (
        found is not None
        and found["ContentLength"] == size
        and found.get("Metadata", {}).get("sha256") == sha256
    )


class KeyTaken(PodforgeError):
    """Another writer's object is at the key (the store refused the write with 412)."""


# How many numbered names (`x (2).png` ...) to try, and index merges to attempt, in a row.
MAX_NUMBERED = 100
INDEX_ATTEMPTS = 20


def conditional_writes(settings: R2Settings, client: Any, retry: Retry, pod: str) -> bool:
    """Whether the store refuses a PUT with If-None-Match: * where an object is: a probe
    object put twice, the second time on that condition (then deleted)."""
    from botocore.exceptions import ClientError

    key = f"{PROBE_PREFIX}{pod}-conditions-{uuid.uuid4().hex[:8]}"
    retry(
        "put the conditions probe",
        lambda: client.put_object(Bucket=settings.bucket, Key=key, Body=b"1"),
    )

    def again() -> bool:
        try:
            client.put_object(Bucket=settings.bucket, Key=key, Body=b"2", IfNoneMatch="*")
        except ClientError as error:
            if error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 412:
                return True
            raise
        return False

    honoured = retry("put the conditions probe again", again)
    retry(
        "delete the conditions probe", lambda: client.delete_object(Bucket=settings.bucket, Key=key)
    )
    return honoured


# -- reading the indexes (--list) ------------------------------------------------------------


def listed_outputs(
    settings: R2Settings, client: Any, retry: Retry, day: str | None
) -> list[dict[str, Any]]:
    """Every entry of every index object under outputs/ (each pod's, and the old layout's
    one per day), merged by key; only ``day``'s indexes when given."""
    paginator = client.get_paginator("list_objects_v2")
    pages = retry(
        "list outputs/",
        lambda: list(paginator.paginate(Bucket=settings.bucket, Prefix="outputs/")),
    )
    indexes = [
        item["Key"]
        for page in pages
        for item in page.get("Contents", [])
        if item["Key"].endswith(f"/{INDEX_NAME}")
        and (day is None or f"/{day}/" in f"/{item['Key']}")
    ]
    merged: dict[str, dict[str, Any]] = {}
    for key in indexes:
        body = retry(
            f"GET {key}",
            lambda key=key: client.get_object(Bucket=settings.bucket, Key=key)["Body"].read(),
        )
        try:
            objects = json.loads(body)["objects"]
        except (ValueError, KeyError, TypeError):
            raise SyncError(f"{key} is no r2sync index") from None
        merged.update({entry["key"]: entry for entry in objects})
    return [merged[key] for key in sorted(merged)]


# -- the probe (--test) ----------------------------------------------------------------------


def round_trip(settings: R2Settings, client: Any, retry: Retry) -> None:
    """put, head, get, delete of a probe object; SyncError/Fatal with the cause in words."""
    key = f"{PROBE_PREFIX}{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
    body = b"podforge r2sync probe\n"
    retry("put the probe", lambda: client.put_object(Bucket=settings.bucket, Key=key, Body=body))
    head = retry("head the probe", lambda: client.head_object(Bucket=settings.bucket, Key=key))
    got = retry(
        "get the probe", lambda: client.get_object(Bucket=settings.bucket, Key=key)["Body"].read()
    )
    retry("delete the probe", lambda: client.delete_object(Bucket=settings.bucket, Key=key))
    if head["ContentLength"] != len(body) or got != body:
        raise SyncError("the probe came back different from what was put")


# -- running ---------------------------------------------------------------------------------


def _gpu_name() -> str:
    """The first GPU's name, as podforge's GPU probe reads it; "none" without one."""
    import subprocess

    from podforge.core.gpu import PROBE_COMMAND, GpuProbeError, parse_probe

    probe = subprocess.run(["sh", "-c", PROBE_COMMAND], capture_output=True, text=True)
    try:
        devices = parse_probe(probe.stdout.splitlines()).devices
    except GpuProbeError:
        return "unknown"
    return devices[0].name if devices else "none"


class Wakeup:
    """inotify on the watched trees where the kernel offers it; else only the rescan timer."""

    def __init__(self, roots: Sequence[Path]) -> None:
        import ctypes
        import ctypes.util

        self.fd: int | None = None
        libc_name = ctypes.util.find_library("c")
        if not libc_name:
            return
        libc = ctypes.CDLL(libc_name, use_errno=True)
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            return
        mask = 0x8 | 0x80 | 0x100 | 0x2  # CLOSE_WRITE | MOVED_TO | CREATE | MODIFY
        for root in roots:
            for directory, _, _ in os.walk(root):
                libc.inotify_add_watch(fd, directory.encode(), mask)
        self.fd = fd
        self._libc, self._mask = libc, mask

    def wait(self, seconds: float) -> None:
        import select

        if self.fd is None:
            time.sleep(seconds)
            return
        ready, _, _ = select.select([self.fd], [], [], seconds)
        if ready:
            try:
                os.read(self.fd, 65536)  # the events only wake us: the rescan decides
            except BlockingIOError:
                pass


def _say(line: str) -> None:
    print(line, flush=True)


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    try:
        settings = r2_settings(environ)
        pod = pod_identity(environ, settings)
    except Fatal as error:
        print(f"podforge r2sync: {error}", file=sys.stderr)
        return 2
    client = make_client(settings)
    # The daemon rides out outages; --once and --test answer within a bounded time.
    budget = 10.0 if args.test else 30.0 if args.once else None
    retry = Retry(
        settings.bucket, budget, stopping, lambda line: print(line, file=sys.stderr, flush=True)
    )
    if args.list:
        try:
            for entry in listed_outputs(settings, client, retry, args.day):
                print(f"{entry['key']} {entry['size']} {entry['sha256']} {entry.get('pod', '-')}")
        except SyncError as error:
            print(f"podforge r2sync --list: FAILED: {error}", file=sys.stderr)
            return 1
        return 0
    if args.test:
        try:
            round_trip(settings, client, retry)
        except SyncError as error:
            print(f"podforge r2sync --test: FAILED: {error}", file=sys.stderr)
            return 1
        print(
            f"r2sync --test: put, head, get and delete work "
            f"on {settings.endpoint}, bucket {settings.bucket}"
        )
        return 0
    watch = [Path(directory).resolve() for directory in args.watch]
    for directory in watch:
        directory.mkdir(parents=True, exist_ok=True)
    journal_path = (
        Path(args.journal) if args.journal else watch[0].parent / ".podforge-r2sync.sqlite"
    )
    syncer = Syncer(
        settings=settings,
        client=client,
        journal=Journal(journal_path),
        watch=watch,
        settle=args.settle,
        retry=retry,
        stopping=stopping,
        journal_path=journal_path.resolve(),
        pod=pod,
        gpu=_gpu_name(),
        say=_say,
    )
    try:
        if args.once:
            return _once(syncer)
        return _daemon(syncer, stopping)
    except Fatal as error:
        print(f"podforge r2sync: {error}", file=sys.stderr)
        return 2


def _once(syncer: Syncer) -> int:
    ready, unfinished = syncer.pending()
    failures = syncer.sync(ready)
    for path, cause in sorted(failures.items()):
        print(f"podforge r2sync: FAILED {path}: {cause}", file=sys.stderr)
    print(
        f"r2sync: {len(ready) - len(failures)} uploaded, {len(failures)} failed, "
        f"{unfinished} not finished yet (left for later)"
    )
    return 1 if failures else 0


def _daemon(syncer: Syncer, stopping: threading.Event) -> int:
    wakeup = Wakeup(syncer.watch)
    how = "inotify" if wakeup.fd is not None else f"a rescan every {RESCAN_SECONDS:.0f} s"
    _say(
        f"r2sync: watching {', '.join(map(str, syncer.watch))} ({how}) -> {syncer.settings.bucket}"
    )
    while not stopping.is_set():
        ready, unfinished = syncer.pending()
        if ready:
            for path, cause in sorted(syncer.sync(ready).items()):
                print(
                    f"podforge r2sync: FAILED {path}: {cause} (retried next round)", file=sys.stderr
                )
        # Unfinished files settle by time alone: look again within the settle period.
        wait = min(RESCAN_SECONDS, syncer.settle) if unfinished else RESCAN_SECONDS
        wakeup.wait(wait)
    _say("r2sync: stopped (SIGTERM); unfinished uploads resume at the next start")
    return 0
