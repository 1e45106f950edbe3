"""Each pinned repository's tree at its commit, on the machine the deploy or `stack lock` runs
on, and the requirements.txt the lock is keyed by (podforge/core/lock.py). From the first of:

1. a checkout on this machine at the pin (``@local`` deploys: the image, the boot phase);
2. a mirror directory of checkouts (``PODFORGE_UPSTREAM``, default ``../shared/upstream``)
   whose ``PINS.json`` records the same commit (for machines that cannot reach GitHub);
3. a cache on this machine (``~/.cache/podforge/upstream/<name>-<commit>``), filled on first
   use by a shallow fetch of that one commit from the pin's URL (git's own configuration
   applies: ``url.<base>.insteadOf`` points a URL at a mirror).

The sandbox serves its pods the same trees (sandbox/repos.py), so a clone with GitHub as its
only upstream runs the demo too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from podforge.core.errors import PodforgeError
from podforge.core.pins import RepoPin

REPO = Path(__file__).resolve().parents[2]


class UpstreamError(PodforgeError, RuntimeError):
    """A repository's tree could not be had; the message names it and the fix."""


def mirror_dir() -> Path:
    return Path(os.environ.get("PODFORGE_UPSTREAM", REPO.parent / "shared" / "upstream"))


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "podforge" / "upstream"


def _mirror_commits() -> dict[str, str]:
    pins_file = mirror_dir() / "PINS.json"
    if not pins_file.is_file():
        return {}
    return {name: entry["commit"] for name, entry in json.loads(pins_file.read_text()).items()}


def tree_of(pin: RepoPin) -> Path:
    """A directory holding the pin's tree at its commit: the mirror's, or the cache's."""
    if _mirror_commits().get(pin.name) == pin.commit:
        return mirror_dir() / pin.name
    cached = cache_dir() / f"{pin.name}-{pin.commit}"
    if not cached.is_dir():
        _fetch(pin, cached)
    return cached


def requirement_texts(
    pins: Sequence[RepoPin], local_checkouts: Mapping[str, str] | None = None
) -> dict[str, str | None]:
    """name -> requirements.txt text at the pin (None: the repository has none).

    ``local_checkouts``: name -> a directory on this machine known to be at the pin.
    """
    local_checkouts = local_checkouts or {}
    texts = {}
    for pin in pins:
        tree = Path(local_checkouts[pin.name]) if pin.name in local_checkouts else tree_of(pin)
        requirements = tree / "requirements.txt"
        texts[pin.name] = requirements.read_text() if requirements.is_file() else None
    return texts


def _fetch(pin: RepoPin, dest: Path) -> None:
    """A shallow fetch of that one commit, checked out into ``dest`` (whole or not at all)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{pin.name}-", dir=dest.parent))
    try:
        git = ["git", "-C", str(work)]
        subprocess.run([*git, "init", "-q"], check=True)
        fetched = subprocess.run(
            [*git, "fetch", "-q", "--depth", "1", pin.url, pin.commit],
            capture_output=True,
            text=True,
        )
        if fetched.returncode != 0:
            cause = (fetched.stderr.strip().splitlines() or ["no output"])[-1]
            raise UpstreamError(
                f"cannot fetch {pin.name} at {pin.commit[:12]} from {pin.url} ({cause}): check"
                " the pin, or set PODFORGE_UPSTREAM to a directory of checkouts with a"
                " PINS.json naming that commit"
            )
        subprocess.run(
            [*git, "-c", "advice.detachedHead=false", "checkout", "-q", pin.commit],
            check=True,
            capture_output=True,
        )
        shutil.rmtree(work / ".git")
        work.rename(dest)
    finally:
        if work.exists():
            shutil.rmtree(work)
