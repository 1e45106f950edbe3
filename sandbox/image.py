"""docker/Dockerfile, built for real in the sandbox: Debian's buildah builds it without a
Docker engine; nvidia/cuda cannot be pulled here, so the base is made from the pods' own
rootfs; build arguments point the image at the sandbox's git daemon and flash-attn's stand-in
(sandbox/settings.py, as the sandbox's inventory does for SSH deploys); the stack lock comes
from PyPI through the sandbox's warm uv cache.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podforge.core.config import SECRET_FIELDS, as_environment
from sandbox.rootfs import CACHE_DIR, cache_key, ensure_rootfs
from sandbox.settings import sandbox_settings
from sandbox.wheels import POD_RELEASES, POD_UV_CACHE, UV_CACHE

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = "docker/Dockerfile"
IGNORE_FILE = "docker/.dockerignore"
STORAGE = CACHE_DIR / "buildah"


@dataclass(frozen=True)
class Buildah:
    """buildah on its own storage (overlay: layers are directories, commits are cheap)."""

    root: Path

    def argv(self, *args: str) -> list[str]:
        return [
            "buildah",
            "--storage-driver",
            "overlay",
            "--root",
            str(self.root / "storage"),
            "--runroot",
            str(self.root / "run"),
            *args,
        ]

    def run(self, *args: str) -> str:
        result = subprocess.run(self.argv(*args), capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"buildah {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout.strip()

    def has_image(self, name: str) -> bool:
        return name in self.run("images", "--format", "{{.Name}}:{{.Tag}}").split()

    def remove_all(self) -> None:
        """Every container and image of this storage, then the storage itself."""
        if self.root.exists():
            self.run("rm", "--all")
            self.run("rmi", "--all", "--force")
            subprocess.run(["rm", "-rf", "--one-file-system", str(self.root)], check=True)


@dataclass(frozen=True)
class Build:
    returncode: int
    output: str  # buildah's and the RUN steps' output, interleaved as printed
    seconds: float


def base_image(buildah: Buildah) -> str:
    """The local stand-in for nvidia/cuda: the sandbox rootfs as a one-layer image (once)."""
    name = f"localhost/podforge-sandbox-base:{cache_key()}"
    if buildah.has_image(name):
        return name
    rootfs = ensure_rootfs()
    buildah.root.mkdir(parents=True, exist_ok=True)
    tarball = buildah.root / "rootfs.tar"
    subprocess.run(
        ["tar", "-C", str(rootfs), "--exclude=./.podforge-complete", "-cf", str(tarball), "."],
        check=True,
    )
    container = buildah.run("from", "scratch")
    buildah.run("add", container, str(tarball), "/")
    buildah.run("commit", "-q", container, name)
    buildah.run("rm", container)
    tarball.unlink()
    return name


def build_args(state: dict[str, Any]) -> dict[str, str]:
    """The sandbox's settings as build arguments; secrets stay out (they come at run time)."""
    public = {k: v for k, v in sandbox_settings(state).items() if k not in SECRET_FIELDS}
    return as_environment(public)


def run_environment(state: dict[str, Any], pod: dict[str, Any]) -> dict[str, str]:
    """What a container of the image is started with (RunPod's env, compose's environment)."""
    secrets = {k: v for k, v in sandbox_settings(state).items() if k in SECRET_FIELDS}
    # Pods share this machine's network: each serves on its own address.
    return as_environment(
        {**secrets, "comfyui_listen": pod["address"], "comfyui_private_listen": pod["address"]}
    )


def build_volumes(standins: Path) -> list[str]:
    """What every RUN step sees: flash-attn's stand-in where the pods have it, and the
    sandbox's warm uv cache at the deploy's default uv_cache_dir (a mount: not in the image;
    another filesystem than the venv's, so uv copies from it rather than linking)."""
    return [
        f"{standins / 'releases'}:{POD_RELEASES}:ro",
        f"{UV_CACHE}:/{POD_UV_CACHE}",
    ]


def build(
    buildah: Buildah,
    context: Path,
    tag: str,
    args: dict[str, str],
    volumes: Sequence[str],
    log: Path,
) -> Build:
    """`docker build -f docker/Dockerfile` with buildah, layers cached; output also in ``log``."""
    argv = buildah.argv(
        "build",
        "--isolation",
        "chroot",
        "--layers",
        "--ignorefile",
        str(context / IGNORE_FILE),
        "-f",
        str(context / DOCKERFILE),
        "-t",
        tag,
    )
    for name, value in sorted(args.items()):
        argv += ["--build-arg", f"{name}={value}"]
    for volume in volumes:
        argv += ["--volume", volume]
    started = time.monotonic()
    with open(log, "w") as out:
        # A file, not a pipe: the gevent-patched test process and pipes do not mix.
        result = subprocess.run([*argv, str(context)], stdout=out, stderr=subprocess.STDOUT)
    return Build(result.returncode, log.read_text(), time.monotonic() - started)


def copy_context(dest: Path, repo: Path = REPO) -> Path:
    """The repo's files (tracked and new, as git sees them) in a build context of their own."""
    listed = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = repo / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the work tree, not yet in git
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
    return dest


def image_size(buildah: Buildah, tag: str) -> str:
    """As buildah shows it ("3.02 GB")."""
    return buildah.run("images", "--format", "{{.Size}}", tag)


def mount_image(buildah: Buildah, tag: str) -> Path:
    """The image's filesystem as a directory (a working container's mount), for a pod's lower."""
    container = buildah.run("from", "--pull-never", tag)
    return Path(buildah.run("mount", container))
