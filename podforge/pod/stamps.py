"""Verification stamps: "this file was sha256-checked and has not changed since".

The fetcher writes them and judges them on the pod (``file_status``); the pod-state fact
reads them there (state.file_with_stamp) and judges them on the controller (``status_of``):
one judge either way.
"""

from __future__ import annotations

import json
import os
from typing import Any, TypedDict

from podforge.probe.state import ModelFile, file_with_stamp

STAMP_DIR = ".podforge-verified"


def stamp_path(dest: str) -> str:
    """Where the stamp of ``dest`` lives (a hidden folder beside it)."""
    return os.path.join(os.path.dirname(dest), STAMP_DIR, os.path.basename(dest) + ".json")


def write_stamp(dest: str, sha256: str, source: str | None = None) -> None:
    """``source``: where the file came from (ModelSource.source_id)."""
    info = os.stat(dest)
    record = {"size": info.st_size, "mtime_ns": info.st_mtime_ns, "sha256": sha256}
    if source is not None:
        record["source"] = source
    stamp = stamp_path(dest)
    os.makedirs(os.path.dirname(stamp), exist_ok=True)
    with open(stamp + ".tmp", "w") as out:
        json.dump(record, out)
    os.replace(stamp + ".tmp", stamp)


def parsed(text: str | None) -> dict[str, Any] | None:
    """A stamp's record; None when there is none or it is damaged (not a JSON object: cut
    short by a full disk, say). One policy for every stamp: a damaged one counts as none,
    so the work it records is done again (a file hashed, workflows installed) and writes
    it anew."""
    try:
        record = json.loads(text) if text is not None else None
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


class ModelStatus(TypedDict):
    """A model file as the deploy and the fetcher judge it."""

    dest: str
    size: int | None  # None: no file
    sha256: str | None  # None unless its stamp still matches the file
    source: str | None  # ModelSource.source_id the stamp recorded (None: not recorded)


def status_of(read: ModelFile) -> ModelStatus:
    """{dest, size (None if absent), sha256 (None unless its stamp still matches the file),
    source (where the stamp says it came from; None: not recorded)} of what
    state.file_with_stamp read."""
    stamp = parsed(read["stamp"]) or {}
    valid = stamp.get("size") == read["size"] and stamp.get("mtime_ns") == read["mtime_ns"]
    sha256 = stamp.get("sha256") if valid and read["size"] is not None else None
    return {
        "dest": read["dest"],
        "size": read["size"],
        "sha256": sha256,
        "source": stamp.get("source"),
    }


def file_status(dest: str) -> ModelStatus:
    """``status_of`` the file now."""
    return status_of(file_with_stamp(dest, stamp_path(dest)))


def is_current(
    status: ModelStatus, size: int | None, sha256: str | None, source: str | None = None
) -> bool:
    """Whether a file_status() satisfies the wanted size, sha256 and source (None: not known).

    A stamp that records no source (written before podforge recorded them) is judged by
    size and sha256 alone, so an upgrade does not fetch every model again."""
    return (
        status["sha256"] is not None
        and (size is None or status["size"] == size)
        and (sha256 is None or status["sha256"] == sha256)
        and (source is None or status["source"] in (None, source))
    )
