"""One file to its key: a PUT, or above MULTIPART_FROM a multipart upload in equal parts
that resumes from the journal; the key taken by another writer gives the next numbered
name; an edit replaces only the object this pod wrote (If-Match on its ETag)."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from podforge.core.keys import index_key, numbered, object_key
from podforge.pod.r2sync.index import publish_indexes
from podforge.pod.r2sync.journal import Journal, Record
from podforge.pod.r2sync.settings import Fatal, R2Settings, SyncError
from podforge.pod.r2sync.store import (
    KeyTaken,
    Store,
    conditional_writes,
    holds,
    stored_sha256,
)
from podforge.pod.r2sync.watcher import Candidate, files_open_for_writing, scan

MIB = 2**20
# R2: parts of 5 MiB to 5 GiB, at most 10,000, all but the last of one size
# (docs/facts.md#r2-and-s3).
MIN_PART = 8 * MIB
MAX_PARTS = 10_000
MULTIPART_FROM = 32 * MIB
# How many numbered names (`x (2).png` ...) to try in a row.
MAX_NUMBERED = 100


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
    """One round: the finished files not yet in the bucket, each uploaded to its key (a
    PUT, or a multipart upload that resumes), then the index objects they belong in."""

    settings: R2Settings
    store: Store
    journal: Journal
    watch: list[Path]
    settle: float
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
                and record.state == "done"
                and (record.size, record.mtime_ns) == (candidate.size, candidate.mtime_ns)
            ):
                continue
            settled = now_ns - candidate.mtime_ns >= self.settle * 1e9
            if not settled or candidate.path in writing:
                unfinished += 1
                continue
            ready.append(candidate)
        return ready, unfinished

    def sync(self, ready: list[Candidate]) -> dict[str, str]:
        """Upload ``ready``, then list in their indexes whatever is uploaded and not listed
        yet (a kill between the two leaves such entries: each round lists them); the
        failures, path (or index key) -> cause."""
        failures: dict[str, str] = {}
        if (ready or self.journal.unlisted()) and self.conditional is None:
            self.conditional = conditional_writes(self.store, self.pod)
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
        failures.update(publish_indexes(self.store, self.journal, self.conditional))
        return failures

    def upload(self, candidate: Candidate) -> None:
        if self.stopping.is_set():
            return
        path = candidate.path
        record = self.journal.record(path)
        same_file = record is not None and (record.size, record.mtime_ns) == (
            candidate.size,
            candidate.mtime_ns,
        )
        md5: str | None = None  # known when the file is read here; a resumed upload re-reads
        if same_file and record is not None and record.state == "uploading":
            sha256 = record.sha256
            if self._ours_there(record.key, candidate.size, sha256):
                return self._finish(candidate, record, None)  # up before a kill, not journaled
        else:
            if record is not None and record.upload_id:
                self._abort(record.key, record.upload_id)  # the file changed meanwhile
            sha256, md5 = _digests(path)
            if os.stat(path).st_mtime_ns != candidate.mtime_ns:
                raise SyncError("changed while being read; taken again next round")
            if record is not None:
                # An edit: its key stays (the day of its first upload), replacing only the
                # object this pod wrote there.
                key, index, etag = record.key, record.index_key, record.etag
                etag = etag or self._etag_if_ours(key, record.sha256)
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
                if record.state == "done":
                    return None  # the bytes were ours, under a key found free before
                continue
            if answer is not None and not self.stopping.is_set():
                self._finish(candidate, record, answer.get("ETag"))
            return None
        raise SyncError(f"{record.key} and {MAX_NUMBERED} numbered names are all taken")

    def _condition(self, record: Record) -> dict[str, str]:
        """What the store must find at the key for a write to go ahead: nothing, or exactly
        this pod's own object (an edit); refused with 412 otherwise."""
        if not self.conditional:
            return {}
        return {"IfMatch": record.etag} if record.etag else {"IfNoneMatch": "*"}

    def _check_before_writing(self, record: Record, size: int, sha256: str) -> None:
        """Where the store ignores conditions: HEAD first (a window remains until the PUT)."""
        if self.conditional:
            return
        found = self.store.head(record.key)
        if found is None:
            return
        if record.etag and found.get("ETag") == record.etag:
            return  # our own object: an edit replaces it
        if holds(found, size, sha256):
            return  # these very bytes: put again, harmlessly
        raise KeyTaken(record.key)

    def _next_free_key(self, candidate: Candidate, record: Record, sha256: str) -> Record:
        """The record's key was found taken. It may hold these very bytes: a predecessor
        killed mid-PUT whose object landed only after this upload looked (then the upload is
        done, under its own key). Otherwise another writer holds it: the first numbered name
        that is free or already holds these bytes. The journal records it."""
        original = record.key
        names = [original, *(numbered(original, n) for n in range(2, MAX_NUMBERED + 2))]
        for key in names:
            found = self.store.head(key)
            ours = holds(found, candidate.size, sha256)
            if found is None or ours:
                break
        else:
            raise SyncError(f"{original} and {MAX_NUMBERED} numbered names are all taken")
        if key != original:
            self.say(
                f"r2sync: {original} holds another writer's object; {candidate.relative} -> {key}"
            )
            self.journal.start(
                candidate.path, candidate.size, candidate.mtime_ns, sha256, key,
                record.index_key, None,
            )  # fmt: skip
        moved = self.journal.record(candidate.path)
        assert moved is not None
        if ours:
            self._finish(candidate, moved, found.get("ETag") if found else None)
            moved = dataclasses.replace(moved, state="done")
        return moved

    def _ours_there(self, key: str, size: int, sha256: str) -> bool:
        return holds(self.store.head(key), size, sha256)

    def _etag_if_ours(self, key: str, sha256: str | None) -> str | None:
        """The ETag of the object at ``key`` when it holds what this pod uploaded (a journal
        from before ETags were kept); None when the key is free or another's."""
        found = self.store.head(key)
        if found is not None and stored_sha256(found) == sha256:
            return str(found["ETag"])
        return None

    def _put(self, candidate: Candidate, record: Record, sha256: str, md5: str) -> dict[str, Any]:
        self._check_before_writing(record, candidate.size, sha256)

        def put() -> Any:
            with open(candidate.path, "rb") as body:
                return self.store.client.put_object(
                    Bucket=self.store.bucket,
                    Key=record.key,
                    Body=body,
                    ContentMD5=md5,  # the server checks the bytes it stored
                    Metadata={"sha256": sha256},
                    **self._condition(record),
                )

        return self.store.conditional(f"PUT {candidate.relative}", record.key, put)

    def _multipart(
        self, candidate: Candidate, record: Record, sha256: str
    ) -> dict[str, Any] | None:
        bucket, key = self.store.bucket, record.key
        upload_id, part_size = record.upload_id, record.part_size
        if upload_id is None:
            self._check_before_writing(record, candidate.size, sha256)
            part_size = part_size_for(candidate.size)
            created = self.store.retry(
                f"create multipart {candidate.relative}",
                lambda: self.store.client.create_multipart_upload(
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
                answer = self.store.retry(
                    f"part {number}/{count} of {candidate.relative}",
                    lambda data=data, number=number, md5=md5: self.store.client.upload_part(
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
                        record.index_key, record.etag,
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
            return self.store.conditional(
                f"complete {candidate.relative}",
                key,
                lambda: self.store.client.complete_multipart_upload(
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
        try:
            self.store.client.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)
        except ClientError as error:
            return error.response.get("Error", {}).get("Code") == "NoSuchUpload"
        except Exception:  # noqa: BLE001 - unreachable: keep the upload for next time
            return False
        return False

    def _abort(self, key: str, upload_id: str) -> None:
        self.store.retry(
            f"abort {key}",
            lambda: self.store.client.abort_multipart_upload(
                Bucket=self.store.bucket, Key=key, UploadId=upload_id
            ),
        )

    def _finish(self, candidate: Candidate, record: Record, etag: str | None) -> None:
        entry = {
            "key": record.key,
            "size": candidate.size,
            "sha256": record.sha256,
            "pod": self.pod,
            "gpu": self.gpu,
            "uploaded_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        if etag is None:  # found in place after a kill: its ETag from the store
            found = self.store.head(record.key)
            etag = str(found["ETag"]) if found else None
        self.journal.done(candidate.path, entry, record.index_key, etag)
        self.say(f"uploaded {record.key} ({candidate.size} bytes)")
