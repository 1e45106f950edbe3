"""Local git repositories of ComfyUI and its custom nodes, served by git daemon.

Each is the real tree of a repository at podforge's pin (podforge/controller/upstream.py:
from the mirror ../shared/upstream, or fetched from its URL into a cache; the real ComfyUI and
nodes run on the pods), committed twice so tests can move a pin. Besides: a node whose requirements
contradict the stack's pins, and, on ComfyUI-GGUF, a commit whose import raises (same
requirements, so the lock still covers it). git daemon serves any commit by sha, as GitHub.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from podforge.controller.upstream import tree_of
from podforge.core.pins import COMFYUI, DEFAULT_CUSTOM_NODES, FEATURE_NODES, RepoPin

REPO = Path(__file__).resolve().parent.parent
# A node that asks for a torch the stack does not pin (tests add it to one pod).
CONFLICTING_NODE = "ComfyUI-NeedsNewerTorch"
CONFLICTING_REQUIREMENT = "torch>=2.6"
# A pack with a commit whose import raises: its requirements are the real ones, so the
# committed lock covers it and verify, not the lock, must find it.
BROKEN_PACK = "ComfyUI-GGUF"
BROKEN_CAUSE = "podforge sandbox: this commit of ComfyUI-GGUF fails on import"


def upstream_pins() -> list[RepoPin]:
    """ComfyUI and every node podforge pins (the defaults and each feature's)."""
    pins = {pin.name: pin for pin in (COMFYUI, *DEFAULT_CUSTOM_NODES)}
    for nodes in FEATURE_NODES.values():
        pins.update({pin.name: pin for pin in nodes if pin.name not in pins})
    return list(pins.values())


def upstream_tree(name: str) -> Path:
    """The tree of the repository podforge pins under ``name``, at its pin."""
    (pin,) = [pin for pin in upstream_pins() if pin.name == name]
    return tree_of(pin)


def _git(repo: Path, *args: str) -> str:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(repo),
        "GIT_AUTHOR_NAME": "podforge sandbox",
        "GIT_AUTHOR_EMAIL": "sandbox@podforge.invalid",
        "GIT_COMMITTER_NAME": "podforge sandbox",
        "GIT_COMMITTER_EMAIL": "sandbox@podforge.invalid",
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    done = subprocess.run(
        ["git", "-C", str(repo), *args], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def _files(source: Path) -> dict[str, bytes]:
    return {
        path.relative_to(source).as_posix(): path.read_bytes()
        for path in sorted(source.rglob("*"))
        if path.is_file()
    }


def _commit_repo(
    bare: Path, files: dict[str, bytes], broken: dict[str, bytes] | None = None
) -> dict[str, Any]:
    """A bare repository with two commits (the pin tests move between them) and, given
    ``broken`` files, a third on a branch of its own: {path, commits, broken?}."""
    work = bare.with_suffix(".work")
    work.mkdir(parents=True)
    _git(work, "init", "-q", "-b", "main")
    for relative, data in files.items():
        target = work / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    _git(work, "add", "-A")
    _git(work, "commit", "-q", "-m", "the upstream tree at its pin")
    first = _git(work, "rev-parse", "HEAD")
    (work / "SANDBOX_REVISION").write_text("2\n")
    _git(work, "add", "-A")
    _git(work, "commit", "-q", "-m", "a second commit to move pins between")
    second = _git(work, "rev-parse", "HEAD")
    repo: dict[str, Any] = {"path": str(bare), "commits": [first, second]}
    if broken:
        _git(work, "checkout", "-q", "-b", "broken")
        for relative, data in broken.items():
            (work / relative).write_bytes(data)
        _git(work, "commit", "-q", "-a", "-m", "an import that raises")
        repo["broken"] = _git(work, "rev-parse", "HEAD")
        _git(work, "checkout", "-q", "main")
    subprocess.run(
        ["git", "clone", "-q", "--bare", str(work), str(bare)], check=True, capture_output=True
    )
    # What lets `git fetch --depth 1 origin <sha>` work, as it does against GitHub.
    _git(bare, "config", "uploadpack.allowAnySHA1InWant", "true")
    # One pack, as a hosted repository keeps: each pod's fetch then reuses its compressed
    # objects rather than compressing the local clone's loose ones again.
    _git(bare, "repack", "-q", "-a", "-d")
    shutil.rmtree(work)
    return repo


def build_repos(base: Path) -> dict[str, dict[str, Any]]:
    """Every repository under ``base``: name -> {path, commits (oldest first), broken?}."""
    base.mkdir(parents=True, exist_ok=True)
    repos = {}
    for pin in sorted(upstream_pins(), key=lambda pin: pin.name):
        files = _files(tree_of(pin))
        broken = None
        if pin.name == BROKEN_PACK:
            init = files["__init__.py"]
            broken = {"__init__.py": f"raise RuntimeError({BROKEN_CAUSE!r})\n".encode() + init}
        repos[pin.name] = _commit_repo(base / f"{pin.name}.git", files, broken)
    conflicting = {
        "requirements.txt": f"{CONFLICTING_REQUIREMENT}\n".encode(),
        "__init__.py": b"NODE_CLASS_MAPPINGS = {}\n",
    }
    repos[CONFLICTING_NODE] = _commit_repo(base / f"{CONFLICTING_NODE}.git", conflicting)
    return repos
