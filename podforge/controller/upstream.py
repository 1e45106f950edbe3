"""Each pinned repository's requirements.txt, read where the deploy or `stack lock` runs.

A lock is keyed by these texts (podforge/core/lock.py), so they are read before anything is
installed, from the first of:
1. a checkout on this machine at the pin (``@local`` deploys: the image, the boot phase);
2. a mirror directory of checkouts (``PODFORGE_UPSTREAM``, default ``../shared/upstream``)
   whose ``PINS.json`` records the same commit (for machines that cannot reach GitHub);
3. a cache on this machine (``~/.cache/podforge/requirements``), filled by
4. a shallow fetch of that one commit from the pin's URL.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from podforge.core.errors import PodforgeError
from podforge.core.pins import RepoPin

REPO = Path(__file__).resolve().parents[2]
NONE_MARK = "\0no requirements.txt\0"  # cached: the commit has no requirements.txt


class UpstreamError(PodforgeError, RuntimeError):
    """A repository's requirements could not be read; the message names it and the fix."""


def mirror_dir() -> Path:
    return Path(os.environ.get("PODFORGE_UPSTREAM", REPO.parent / "shared" / "upstream"))


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "podforge" / "requirements"


def requirement_texts(
    pins: Sequence[RepoPin], local_checkouts: Mapping[str, str] | None = None
) -> dict[str, str | None]:
    """name -> requirements.txt text at the pin (None: the repository has none).

    ``local_checkouts``: name -> a directory on this machine known to be at the pin.
    """
    local_checkouts = local_checkouts or {}
    mirror = _mirror_commits()
    texts = {}
    for pin in pins:
        if pin.name in local_checkouts:
            texts[pin.name] = _read(Path(local_checkouts[pin.name]) / "requirements.txt")
        elif mirror.get(pin.name) == pin.commit:
            texts[pin.name] = _read(mirror_dir() / pin.name / "requirements.txt")
        else:
            texts[pin.name] = _cached_or_fetched(pin)
    return texts


def _read(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None


def _mirror_commits() -> dict[str, str]:
    pins_file = mirror_dir() / "PINS.json"
    if not pins_file.is_file():
        return {}
    return {name: entry["commit"] for name, entry in json.loads(pins_file.read_text()).items()}


def _cached_or_fetched(pin: RepoPin) -> str | None:
    cached = cache_dir() / f"{pin.name}-{pin.commit}.txt"
    if not cached.exists():
        text = _fetch(pin)
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(".partial")
        partial.write_text(NONE_MARK if text is None else text)
        partial.rename(cached)
    text = cached.read_text()
    return None if text == NONE_MARK else text


def _fetch(pin: RepoPin) -> str | None:
    """requirements.txt at one commit: a shallow fetch of that commit alone, then git show."""
    with tempfile.TemporaryDirectory(prefix="podforge-upstream-") as work:
        git = ["git", "-C", work]
        subprocess.run([*git, "init", "-q", "--bare"], check=True)
        fetched = subprocess.run(
            [*git, "fetch", "-q", "--depth", "1", pin.url, pin.commit],
            capture_output=True,
            text=True,
        )
        if fetched.returncode != 0:
            cause = (fetched.stderr.strip().splitlines() or ["no output"])[-1]
            raise UpstreamError(
                f"cannot read {pin.name}'s requirements at {pin.commit[:12]} from {pin.url}"
                f" ({cause}): check the pin, or set PODFORGE_UPSTREAM to a directory of"
                " checkouts with a PINS.json naming that commit"
            )
        listed = subprocess.run(
            [*git, "ls-tree", "--name-only", pin.commit, "requirements.txt"],
            capture_output=True,
            text=True,
            check=True,
        )
        if not listed.stdout.strip():
            return None
        shown = [*git, "show", f"{pin.commit}:requirements.txt"]
        return subprocess.run(shown, capture_output=True, text=True, check=True).stdout
