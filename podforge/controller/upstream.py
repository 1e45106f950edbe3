"""Each pinned repository's tree at its commit, on the machine the deploy or `stack lock` runs
on, and the requirements.txt the lock is keyed by (podforge/core/lock.py). From the first of:

1. a checkout on this machine at the pin (``@local`` deploys: the image, the boot phase);
2. a mirror directory of checkouts (``PODFORGE_UPSTREAM``, default ``../shared/upstream``)
   whose ``PINS.json`` records the same commit (for machines that cannot reach GitHub);
3. a cache on this machine, filled on first use by a shallow fetch of that one commit from
   the pin's URL (git's own configuration applies: ``url.<base>.insteadOf`` points a URL at
   a mirror): whole trees in ``~/.cache/podforge/upstream/<name>-<commit>`` where a tree is
   wanted (the sandbox, `stack lock`'s tests), else the requirements.txt alone in
   ``~/.cache/podforge/requirements`` (every deploy checks the lock: it needs no tree).

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


NONE_MARK = "\0no requirements.txt\0"  # cached: the commit has no requirements.txt


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "podforge"


def _mirror_commits() -> dict[str, str]:
    pins_file = mirror_dir() / "PINS.json"
    if not pins_file.is_file():
        return {}
    return {name: entry["commit"] for name, entry in json.loads(pins_file.read_text()).items()}


def tree_of(pin: RepoPin) -> Path:
    """A directory holding the pin's tree at its commit: the mirror's, or the cache's."""
    if _mirror_commits().get(pin.name) == pin.commit:
        return mirror_dir() / pin.name
    cached = cache_dir() / "upstream" / f"{pin.name}-{pin.commit}"
    if not cached.is_dir():
        _fetch_tree(pin, cached)
    return cached


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
        tree = cache_dir() / "upstream" / f"{pin.name}-{pin.commit}"
        if pin.name in local_checkouts:
            tree = Path(local_checkouts[pin.name])
        elif mirror.get(pin.name) == pin.commit:
            tree = mirror_dir() / pin.name
        elif not tree.is_dir():
            texts[pin.name] = _cached_requirements(pin)
            continue
        requirements = tree / "requirements.txt"
        texts[pin.name] = requirements.read_text() if requirements.is_file() else None
    return texts


def _cached_requirements(pin: RepoPin) -> str | None:
    cached = cache_dir() / "requirements" / f"{pin.name}-{pin.commit}.txt"
    if not cached.exists():
        with tempfile.TemporaryDirectory(prefix="podforge-upstream-") as work:
            _shallow_fetch(pin, Path(work))
            git = ["git", "-C", work]
            listed = subprocess.run(
                [*git, "ls-tree", "--name-only", pin.commit, "requirements.txt"],
                capture_output=True,
                text=True,
                check=True,
            )
            text = None
            if listed.stdout.strip():
                shown = [*git, "show", f"{pin.commit}:requirements.txt"]
                text = subprocess.run(shown, capture_output=True, text=True, check=True).stdout
        cached.parent.mkdir(parents=True, exist_ok=True)
        # A file of its own, renamed into place: a deploy's hosts may fetch one pin at once.
        with tempfile.NamedTemporaryFile(
            "w", dir=cached.parent, prefix=f".{cached.name}.", delete=False
        ) as partial:
            partial.write(NONE_MARK if text is None else text)
        os.replace(partial.name, cached)
    text = cached.read_text()
    return None if text == NONE_MARK else text


def _shallow_fetch(pin: RepoPin, work: Path) -> None:
    """That one commit into a new repository at ``work``; UpstreamError naming the pin."""
    subprocess.run(["git", "-C", str(work), "init", "-q"], check=True)
    fetched = subprocess.run(
        ["git", "-C", str(work), "fetch", "-q", "--depth", "1", pin.url, pin.commit],
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


def _fetch_tree(pin: RepoPin, dest: Path) -> None:
    """The commit's tree checked out into ``dest``, whole or not at all."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{pin.name}-", dir=dest.parent))
    try:
        _shallow_fetch(pin, work)
        subprocess.run(
            ["git", "-C", str(work), "-c", "advice.detachedHead=false", "checkout", "-q",
             pin.commit],
            check=True,
            capture_output=True,
        )  # fmt: skip
        shutil.rmtree(work / ".git")
        try:
            work.rename(dest)
        except OSError:
            if not dest.is_dir():
                raise  # not another fetch of the same pin that finished first
    finally:
        if work.exists():
            shutil.rmtree(work)
