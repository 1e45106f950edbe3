"""Verification stamps: "this file was sha256-checked and has not changed since".

Stdlib only and self-contained: the pod-state fact (facts/pod.py) runs this very source on
the pod with the system python3 (``python3 -c``), so the fact and the fetcher judge files
one way.
"""

from __future__ import annotations

import json
import os
from typing import Any

STAMP_DIR = ".podforge-verified"


def stamp_path(dest: str) -> str:
    """Where the stamp of ``dest`` lives (a hidden folder beside it)."""
    return os.path.join(os.path.dirname(dest), STAMP_DIR, os.path.basename(dest) + ".json")


def write_stamp(dest: str, sha256: str) -> None:
    info = os.stat(dest)
    record = {"size": info.st_size, "mtime_ns": info.st_mtime_ns, "sha256": sha256}
    stamp = stamp_path(dest)
    os.makedirs(os.path.dirname(stamp), exist_ok=True)
    with open(stamp + ".tmp", "w") as out:
        json.dump(record, out)
    os.replace(stamp + ".tmp", stamp)


def file_status(dest: str) -> dict[str, Any]:
    """{dest, size (None if absent), sha256 (None unless a stamp still matches the file)}."""
    try:
        info = os.stat(dest)
    except FileNotFoundError:
        return {"dest": dest, "size": None, "sha256": None}
    try:
        with open(stamp_path(dest)) as handle:
            stamp = json.load(handle)
    except (FileNotFoundError, ValueError):
        stamp = {}
    valid = stamp.get("size") == info.st_size and stamp.get("mtime_ns") == info.st_mtime_ns
    return {"dest": dest, "size": info.st_size, "sha256": stamp.get("sha256") if valid else None}


def is_current(status: dict[str, Any], size: int | None, sha256: str | None) -> bool:
    """Whether a file_status() satisfies the wanted size and sha256 (None: not known)."""
    return (
        status["sha256"] is not None
        and (size is None or status["size"] == size)
        and (sha256 is None or status["sha256"] == sha256)
    )
