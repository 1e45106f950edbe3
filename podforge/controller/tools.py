"""podforge's own distribution as pods get it: what its pod-side tools require and its wheel.

- ``tool_requirements``: pyproject.toml's ``dependencies`` and its ``pod`` extra, the one
  list of what ``podforge fetch``, ``r2sync`` and ``verify`` need: the wheel's metadata says
  it, and every stack lock installs it (``stack lock`` reads it here).
- ``tools_wheel``: the wheel, built by uv's build backend (``uv build``; pyproject.toml names
  ``uv_build``, which uv runs in-process: no download, 0.2 s) from a copy of the sources
  whose version carries a hash of the code (``0.1.0+g<hash>``), so one fact tells whether a
  pod's tools are current. Built once per version into a cache; the backend writes fixed
  timestamps, so the same code gives the same bytes, and the same sha256 in the sync file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

# The standard library reads TOML from Python 3.11; a pod's 3.10 (the boot phase's deployer
# venv) has tomli, the same parser, in its requirements.
if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

from podforge.core.errors import PodforgeError
from podforge.core.stacks import UV_ENVIRONMENT

REPO = Path(__file__).resolve().parents[2]


class ToolsWheelError(PodforgeError, RuntimeError):
    """podforge's wheel could not be built; the message has uv's own lines."""


def project(repo: Path = REPO) -> dict[str, Any]:
    with (repo / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)["project"]


def tool_requirements(repo: Path = REPO) -> list[str]:
    """What the pod-side tools need: the core's dependencies and the ``pod`` extra."""
    found = project(repo)
    return [*found["dependencies"], *found["optional-dependencies"]["pod"]]


def _sources(repo: Path) -> list[Path]:
    """What the wheel is built from, relative to the repo."""
    package = sorted(
        path.relative_to(repo)
        for path in (repo / "podforge").rglob("*.py")
        if "__pycache__" not in path.parts
    )
    return [Path("pyproject.toml"), *package]


def tools_version(repo: Path = REPO) -> str:
    """``<version>+g<hash>``: a local version that changes exactly when the code does."""
    digest = hashlib.sha256()
    for path in _sources(repo):
        digest.update(path.as_posix().encode() + b"\0" + (repo / path).read_bytes() + b"\0")
    return f"{project(repo)['version']}+g{digest.hexdigest()[:12]}"


def tools_wheel(uv: str, cache_dir: Path, repo: Path = REPO) -> Path:
    """The wheel of the code as it is now, from ``cache_dir`` or built there by ``uv``."""
    version = tools_version(repo)
    wheel = cache_dir / f"podforge-{version}-py3-none-any.whl"
    if wheel.exists():
        return wheel
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Staged beside the cache: the wheel is then renamed into place on one filesystem.
    with tempfile.TemporaryDirectory(prefix=".build-", dir=cache_dir) as stage:
        source, built = Path(stage) / "source", Path(stage) / "built"
        for path in _sources(repo):
            (source / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(repo / path, source / path)
        env = {**os.environ, **UV_ENVIRONMENT}
        for argv in (
            [uv, "version", "--frozen", version],
            [uv, "build", "--wheel", "--out-dir", str(built), "--quiet"],
        ):
            try:
                done = subprocess.run(argv, cwd=source, capture_output=True, text=True, env=env)
            except FileNotFoundError:
                raise ToolsWheelError(f"podforge's wheel: {uv} is not there to build it") from None
            if done.returncode != 0:
                lines = (done.stderr or done.stdout).strip().replace("\n", "; ")
                raise ToolsWheelError(f"podforge's wheel: {' '.join(argv[1:3])} failed: {lines}")
        if not (built / wheel.name).exists():
            raise ToolsWheelError(f"podforge's wheel: uv build wrote no {wheel.name}")
        # Atomic: a deploy's hosts may want the wheel at once; a reader sees all of it.
        os.replace(built / wheel.name, wheel)
    return wheel
