"""The pods' shared, read-only Debian root filesystem: built once with mmdebstrap, cached."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# What a RunPod-like image has, plus what the deploy's system task would install anyway
# (so the sandbox deploy does not spend its minutes in apt).
PACKAGES = (
    "openssh-server",
    "openssh-sftp-server",
    "ca-certificates",
    "python3",
    "python3-venv",
    "curl",
    "procps",
    "tini",
    "git",
    "supervisor",
    "libgl1",
    "libglib2.0-0",
)
RECIPE_VERSION = "1"
CACHE_DIR = Path(os.environ.get("PODFORGE_ROOTFS_CACHE", "/var/cache/podforge"))


def cache_key() -> str:
    recipe = "\n".join([RECIPE_VERSION, SUITE, MIRROR, *PACKAGES])
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


@contextlib.contextmanager
def cache_lock() -> Iterator[None]:
    """The host caches (rootfs, uv) to oneself: sandboxes started at once (the test workers)
    build each of them once, not over each other."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_rootfs() -> Path:
    """Path of the cached rootfs, building it first when it is not there (~30 s)."""
    with cache_lock():
        return _ensure_rootfs()


def _ensure_rootfs() -> Path:
    root = CACHE_DIR / f"rootfs-{SUITE}-{cache_key()}"
    if (root / ".podforge-complete").exists():
        return root
    building = root.with_name(root.name + ".building")
    if building.exists():
        shutil.rmtree(building)
    print(f"sandbox: building the pod rootfs with mmdebstrap into {root} (once)", flush=True)
    subprocess.run(
        [
            "mmdebstrap",
            "--variant=minbase",
            "--quiet",
            f"--include={','.join(PACKAGES)}",
            SUITE,
            str(building),
            MIRROR,
        ],
        check=True,
        stdout=sys.stderr,
    )
    _trust_local_cas(building)
    # Host keys once for all pods: the sandbox's inventory does not pin host keys.
    subprocess.run(["chroot", str(building), "ssh-keygen", "-A"], check=True)
    (building / ".podforge-complete").write_text(cache_key() + "\n")
    building.rename(root)
    return root


def _trust_local_cas(root: Path) -> None:
    """This machine's extra CAs, or pip inside a pod fails on TLS."""
    local_cas = sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))
    target = root / "usr/local/share/ca-certificates"
    target.mkdir(parents=True, exist_ok=True)
    for ca in local_cas:
        shutil.copy2(ca, target / ca.name)
    subprocess.run(["chroot", str(root), "update-ca-certificates"], check=True, stdout=sys.stderr)
