"""What sandbox pods install that PyPI cannot give them here, and PyPI's wheels kept warm.

- flash-attn: its real wheels are GitHub release assets (unreachable here), so pods get a
  stand-in under the release's own file name from a file:// mirror (``POD_RELEASES``).
- uv's cache: every committed lock, the tools' and each stack's (real torch 2.5.1 and 2.8.0
  from PyPI and every node's requirement, ~3.5 GB of wheels a stack) is downloaded once into
  a cache on this machine (``warm_uv_cache``) and
  each pod starts with a hardlinked copy of it at the deploy's default ``uv_cache_dir``: a
  pod's venv then hardlinks from it too (~20 MB a pod, not 7 GB), and a second pod, a pod
  restart or a rerun of the tests downloads nothing again. The cache's unpacked wheels get
  their bytecode once (``sandbox/cache_bytecode.py``), which the venvs hardlink too: the
  deploy's ``--compile-bytecode`` then finds it current instead of compiling ~16,000
  modules on every pod (the image build, which copies out of the cache, still compiles).
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from podforge.core.lock import lock_file
from podforge.core.plan import flash_attn_wheel
from podforge.core.stacks import STACK_PROFILES, TOOLS_LOCK, UV_ENVIRONMENT
from sandbox.rootfs import CACHE_DIR, cache_lock

REPO = Path(__file__).resolve().parent.parent
# Inside each pod: a file:// mirror of flash-attn's releases.
POD_RELEASES = "/opt/sandbox/releases"
UV_CACHE = CACHE_DIR / "uv"
POD_UV_CACHE = "workspace/.cache/uv"  # the deploy's default uv_cache_dir, in a pod's root


# A stand-in for a release asset is written by hand: its file name carries the release's
# platform tag, which no build backend would give a pure-Python package.
# Fixed timestamps: the same content gives the same bytes, hence the same sha1 remotely.
_EPOCH = (1980, 1, 1, 0, 0, 0)


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return f"sha256={digest.decode()}"


def wheel_name(name: str, version: str, tag: str = "py3-none-any") -> str:
    return f"{name.replace('-', '_')}-{version}-{tag}.whl"


def build_wheel(
    dest_dir: Path,
    name: str,
    version: str,
    files: Mapping[str, bytes],
    requires: Sequence[str] = (),
    console_scripts: Mapping[str, str] | None = None,
    tag: str = "py3-none-any",
) -> Path:
    """Write ``name-version-tag.whl`` holding ``files`` (archive path -> bytes)."""
    dist_info = f"{name.replace('-', '_')}-{version}.dist-info"
    meta = [f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}"]
    meta += [f"Requires-Dist: {requirement}" for requirement in requires]
    entries = dict(sorted(files.items()))
    entries[f"{dist_info}/METADATA"] = ("\n".join(meta) + "\n").encode()
    entries[f"{dist_info}/WHEEL"] = (
        f"Wheel-Version: 1.0\nGenerator: podforge\nRoot-Is-Purelib: true\nTag: {tag}\n"
    ).encode()
    if console_scripts:
        lines = [f"{script} = {target}" for script, target in sorted(console_scripts.items())]
        entries[f"{dist_info}/entry_points.txt"] = (
            "[console_scripts]\n" + "\n".join(lines) + "\n"
        ).encode()
    record = [f"{path},{_record_hash(data)},{len(data)}" for path, data in entries.items()]
    record.append(f"{dist_info}/RECORD,,")
    entries[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / wheel_name(name, version, tag)
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path, data in entries.items():
            info = zipfile.ZipInfo(path, date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return target


def _standin(name: str, version: str) -> dict[str, bytes]:
    module = name.replace("-", "_")
    text = (
        f'"""podforge sandbox stand-in for {name} (its wheels are GitHub release assets)."""\n'
        f'__version__ = "{version}"\n'
    )
    return {f"{module}/__init__.py": text.encode()}


def build_standins(base: Path, python: tuple[int, int] = (3, 11)) -> dict[str, str]:
    """flash-attn's stand-in for every profile into ``base/releases``; the sha256 of each by
    its file name (the pods pin them: flash_attn_sha256)."""
    hashes = {}
    for profile in STACK_PROFILES.values():
        url, why_not = flash_attn_wheel(profile, python, "x86_64", f"file://{POD_RELEASES}")
        if url is None:
            raise RuntimeError(f"no flash-attn wheel for the sandbox pods: {why_not}")
        # The release's own file name (version, CUDA, torch, ABI, Python tag) under its tag dir.
        relative = url.removeprefix(f"file://{POD_RELEASES}/")
        tag_dir, filename = relative.split("/")
        version = filename.split("-")[1]
        made = build_wheel(
            base / "releases" / tag_dir,
            "flash_attn",
            version,
            _standin("flash_attn", version),
            requires=["torch", "einops"],
            tag=filename.removesuffix(".whl").split("-", 2)[2],
        )
        hashes[made.name] = hashlib.sha256(made.read_bytes()).hexdigest()
    return hashes


def warm_uv_cache(python: str = "/usr/bin/python3") -> None:
    """Every wheel of every committed stack lock into ``UV_CACHE`` (the pods' Python:
    Debian's 3.11, as in the rootfs). Downloads only what the cache lacks (~3.5 GB a profile
    the first time)."""
    with cache_lock():
        _warm_uv_cache(python)


def _warm_uv_cache(python: str) -> None:
    UV_CACHE.mkdir(parents=True, exist_ok=True)
    from uv import find_uv_bin

    uv = find_uv_bin()
    environment = {**os.environ, **UV_ENVIRONMENT, "UV_CACHE_DIR": str(UV_CACHE)}
    for profile in [*STACK_PROFILES, TOOLS_LOCK]:
        lock = REPO / lock_file(profile)
        print(f"sandbox: {lock.name} into the uv cache {UV_CACHE}", file=sys.stderr, flush=True)
        # A throwaway venv beside the cache: uv fills the cache and hardlinks into the venv.
        with tempfile.TemporaryDirectory(dir=CACHE_DIR, prefix="uv-warm-") as work:
            venv = Path(work) / "venv"
            python_in_venv = str(venv / "bin/python")
            for argv in (
                [uv, "venv", "--quiet", "--python", python, str(venv)],
                [uv, "pip", "sync", "--quiet", "--python", python_in_venv, str(lock)],
            ):
                subprocess.run(argv, check=True, env=environment, stdout=sys.stderr)
    # Bytecode beside every source, compiled once here: pods hardlink it with the sources.
    script = Path(__file__).with_name("cache_bytecode.py")
    subprocess.run([python, str(script), str(UV_CACHE / "archive-v0")], check=True)


def seed_uv_cache(root: Path) -> None:
    """A pod's own uv cache (``root``: its upper dir), hardlinked from the warm one."""
    target = root / POD_UV_CACHE
    if os.stat(UV_CACHE).st_dev != os.stat(root).st_dev:
        raise RuntimeError(
            f"{UV_CACHE} and {root} are on different filesystems, so pods cannot hardlink the"
            " uv cache: set PODFORGE_ROOTFS_CACHE (or PODFORGE_SANDBOX_DIR) to put both on one"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-al", str(UV_CACHE), str(target)], check=True)
