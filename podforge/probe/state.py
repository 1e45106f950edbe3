"""What is on the pod: git checkouts, the venvs, stamps, the files the deploy writes.

Standard library only and self-contained: the pod-state fact (facts/pod.py) runs this
file's source with the pod's system python3 (no venv needed), so a no-op deploy does not
grow a remote command per node, per package or per file. It reads and does not judge:
stamps come back as their text, which the controller parses.
"""

from __future__ import annotations

import configparser
import glob
import hashlib
import os
import subprocess
from typing import TypedDict

# The shapes this module's answers have: the pod-state fact (facts/pod.py) returns them as
# they are, and the deploy (tasks/desired.py) reads them by these names.


class RepoState(TypedDict):
    git: bool  # the directory is a git checkout
    head: str | None  # its HEAD commit (None: no commit yet, or no checkout)
    url: str | None  # its origin's URL
    dirty: list[str] | None  # tracked files with local changes (None: not asked, at its pin)


class Software(TypedDict):
    repos: dict[str, RepoState | None]  # checkout path -> its state (None: no directory)
    venv: dict[str, str] | None  # distribution -> version in the pod's venv (None: no venv)
    tools: dict[str, str] | None  # the same of the pod tools' venv
    deployer: dict[str, str] | None  # the same of the boot phase's venv
    workflows: str | None  # the workflows stamp's text (None: none)
    nvcc: str | None  # where nvcc is
    supervisord: bool  # Debian's supervisord (its pidfile) is running
    debs: list[str]  # the installed Debian packages


class FileDigest(TypedDict):
    sha1: str
    mode: str  # octal, as ls shows it: "600"


class Files(TypedDict):
    files: dict[str, FileDigest]  # path -> its digest, of every file the patterns match
    dirs: dict[str, str | None]  # path -> its mode (None: no directory)


class ModelFile(TypedDict):
    dest: str
    size: int | None  # None: no file
    mtime_ns: int | None
    stamp: str | None  # the text of its verification stamp (None: none)


def repo_state(path: str, pin: str | None = None) -> RepoState | None:
    """A checkout's HEAD, origin and tracked local changes; None when there is no dir.

    A checkout whose HEAD is detached at ``pin`` is read from its files alone, its local
    changes not asked (``dirty``: None): the deploy leaves a checkout at its pin as it is
    whatever they are, so a no-op runs no git process (one per checkout, ~3 ms of CPU each).
    """
    if not os.path.isdir(path):
        return None
    if not os.path.isdir(os.path.join(path, ".git")):
        return {"git": False, "head": None, "url": None, "dirty": []}
    if pin is not None and detached_head(path) == pin:
        return {"git": True, "head": pin, "url": origin_url(path), "dirty": None}
    status = subprocess.run(
        # --no-optional-locks: a probe reads; it does not refresh (write) the checkout's index.
        [
            "git",
            "--no-optional-locks",
            "-C",
            path,
            "status",
            "--porcelain=v2",
            "--branch",
            "--untracked-files=no",
        ],
        capture_output=True,
        text=True,
    )
    head = None
    dirty = []
    for line in status.stdout.splitlines():
        if line.startswith("# branch.oid "):
            oid = line.split()[2]
            head = None if oid == "(initial)" else oid
        elif line and not line.startswith("#"):
            dirty.append(line.rsplit(" ", 1)[-1])  # the path is the last field
    return {"git": True, "head": head, "url": origin_url(path), "dirty": dirty}


def detached_head(path: str) -> str | None:
    """The commit a detached HEAD names (.git/HEAD holds its sha); None when HEAD names a
    branch ("ref: refs/heads/...") or there is no HEAD file."""
    try:
        with open(os.path.join(path, ".git", "HEAD")) as head:
            named = head.read().strip()
    except FileNotFoundError:
        return None
    return None if named.startswith("ref:") else named


def origin_url(path: str) -> str | None:
    """remote.origin.url of the checkout's .git/config, as `git config --get` prints it."""
    # strict=False: git repeats keys (fetch) that configparser would refuse; git quotes a
    # value holding # or ;, which configparser leaves on.
    config = configparser.ConfigParser(strict=False, interpolation=None)
    config.read(os.path.join(path, ".git", "config"))
    return config.get('remote "origin"', "url", fallback="").strip('"') or None


def executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def venv_distributions(venv: str) -> dict[str, str] | None:
    """name -> version of every distribution in the venv; None when there is no venv.

    Read from the names of the .dist-info directories ("{name}-{version}", both normalized,
    as PyPA's "Recording installed projects" fixes them), not from each METADATA file: 150
    files opened and read were ~2 ms of every probe. Names come as the wheel spelled them
    (``typing_extensions``): compare them canonicalized."""
    if not os.path.exists(os.path.join(venv, "bin", "python")):
        return None
    found = {}
    for info in sorted(
        glob.glob(os.path.join(venv, "lib", "python*", "site-packages", "*.dist-info"))
    ):
        if os.path.isfile(os.path.join(info, "METADATA")):  # half-removed ones are not
            name, _, version = os.path.basename(info)[: -len(".dist-info")].partition("-")
            found[name] = version
    return found


def sha1_of(path: str) -> str | None:
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as file:
        return hashlib.sha1(file.read()).hexdigest()


def file_text(path: str) -> str | None:
    """The file's text; None when there is none."""
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return file.read()
    except FileNotFoundError:
        return None


def file_with_stamp(dest: str, stamp: str) -> ModelFile:
    """{dest, size and mtime_ns (None: no file), stamp: the text of its verification stamp
    (None: none)}: what stamps.status_of judges."""
    try:
        info = os.stat(dest)
    except FileNotFoundError:
        return {"dest": dest, "size": None, "mtime_ns": None, "stamp": None}
    return {
        "dest": dest,
        "size": info.st_size,
        "mtime_ns": info.st_mtime_ns,
        "stamp": file_text(stamp),
    }


def software(
    repos: dict[str, str], venv: str, tools: str, deployer: str, workflows: str
) -> Software:
    """Checkouts (``repos``: path -> pinned commit), the venvs' distributions, the workflows
    stamp's text, nvcc, supervisord and the installed Debian packages."""
    on_path = [os.path.join(directory, "nvcc") for directory in os.get_exec_path()]
    in_cuda = [os.path.join(cuda, "bin", "nvcc") for cuda in sorted(glob.glob("/usr/local/cuda*"))]
    nvcc = next((path for path in [*on_path, *in_cuda] if executable(path)), None)
    return {
        "repos": {path: repo_state(path, pin) for path, pin in repos.items()},
        "venv": venv_distributions(venv),
        "tools": venv_distributions(tools),
        "deployer": venv_distributions(deployer),
        "workflows": file_text(workflows),
        "nvcc": nvcc,
        "supervisord": supervisord_running(),
        "debs": installed_debs(),
    }


def installed_debs(status: str = "/var/lib/dpkg/status") -> list[str]:
    """Names of the Debian packages dpkg has installed (none on a system without dpkg)."""
    if not os.path.exists(status):
        return []
    names, name = [], None
    with open(status) as file:
        for line in file:
            if line.startswith("Package: "):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("Status: ") and line.split()[-1] == "installed" and name:
                names.append(name)
    return sorted(names)


def supervisord_running(pidfile: str = "/var/run/supervisord.pid") -> bool:
    """Whether the supervisord of Debian's configuration (its pidfile) is alive."""
    try:
        with open(pidfile) as file:
            pid = int(file.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return b"supervisord" in cmdline.read()
    except (OSError, ValueError):
        return False


def digests(patterns: list[str], dirs: list[str]) -> Files:
    """sha1 and mode of every file matching the patterns; the mode of each of ``dirs`` that
    exists (None for the others)."""
    files: dict[str, FileDigest] = {}
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            digest = sha1_of(path)
            if digest is not None:
                files[path] = {"sha1": digest, "mode": f"{os.stat(path).st_mode & 0o7777:o}"}
    return {
        "files": files,
        "dirs": {
            path: f"{os.stat(path).st_mode & 0o7777:o}" if os.path.isdir(path) else None
            for path in dirs
        },
    }
