"""r2sync's journal: sqlite in WAL mode. Each file's identity (path, size, mtime, sha256),
its key and state, a multipart upload's id and finished parts' ETags, and the entries each
index object must list: committed before the next network call, so a restart after a kill
uploads what is missing and nothing twice."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podforge.core.keys import INDEX_NAME

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


@dataclass(frozen=True)
class Record:
    """One file's row: what was uploaded (or is being) and where."""

    size: int
    mtime_ns: int
    sha256: str
    key: str  # the object's key
    state: str  # "uploading" | "done"
    upload_id: str | None  # the multipart upload in progress
    part_size: int | None
    index_key: str  # the index object its entry belongs in
    etag: str | None  # of the object this pod wrote at the key (None: none yet)


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

    def record(self, path: str) -> Record | None:
        names = [field.name for field in dataclasses.fields(Record)]
        rows = self.run(f"SELECT {', '.join(names)} FROM files WHERE path = ?", path)
        if not rows:
            return None
        record = Record(*rows[0])
        if record.index_key is None:
            # Written before keys named the pod: its day's list was outputs/<day>/metadata.json.
            day = record.key.split("/")[1]
            record = dataclasses.replace(record, index_key=f"outputs/{day}/{INDEX_NAME}")
        return record

    def unlisted(self) -> bool:
        """Whether an uploaded file waits for its index to list it."""
        return bool(self.run("SELECT 1 FROM index_entries WHERE listed = 0 LIMIT 1"))

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
