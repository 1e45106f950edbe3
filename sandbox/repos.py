"""Local git repositories standing in for ComfyUI and its custom nodes, served by git daemon.

Built from shared/upstream/: each repository holds its project's real requirements.txt and
pyproject.toml (ComfyUI also its real comfy/cli_args.py and options.py, WanVideoWrapper its
SteadyDancer example workflow) and a stand-in entry point (sandbox/standins/) registering the
node types the real project registers that podforge's workflows use (STANDIN_NODE_TYPES), in
the real project's style. Two commits each, so tests can move a pin; plus a node whose
requirements contradict the stack's pins. git daemon serves any commit by sha, as GitHub does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
STANDINS = REPO / "sandbox" / "standins"
# A node that asks for a torch the stack does not pin (tests add it to one pod).
CONFLICTING_NODE = "ComfyUI-NeedsNewerTorch"
CONFLICTING_REQUIREMENT = "torch>=2.6"


# Node types each real project registers (those podforge's workflows and loaders use).
STANDIN_NODE_TYPES: dict[str, tuple[str, ...]] = {
    "ComfyUI": (
        "CLIPVisionLoader",
        "LoadImage",
        "UNETLoader",
        "VAELoader",
        "CLIPLoader",
        "LoraLoaderModelOnly",
    ),
    "ComfyUI-GGUF": ("UnetLoaderGGUF",),
    "ComfyUI-KJNodes": (
        "GetImageRangeFromBatch",
        "GetImageSizeAndCount",
        "ImageConcatMulti",
        "ImageResizeKJv2",
    ),
    "ComfyUI-VideoHelperSuite": ("VHS_LoadVideo", "VHS_VideoCombine"),
    "ComfyUI-WanAnimatePreprocess": (
        "OnnxDetectionModelLoader",
        "PoseAndFaceDetection",
        "DrawViTPose",
    ),
    "ComfyUI-WanVideoWrapper": (
        "WanVideoModelLoader",
        "WanVideoVAELoader",
        "WanVideoTextEncodeCached",
        "LoadWanVideoT5TextEncoder",
        "WanVideoLoraSelect",
        "WanVideoSetLoRAs",
        "WanVideoBlockSwap",
        "WanVideoSetBlockSwap",
        "WanVideoTorchCompileSettings",
        "WanVideoClipVisionEncode",
        "WanVideoImageToVideoEncode",
        "WanVideoAddSteadyDancerEmbeds",
        "WanVideoEncode",
        "WanVideoDecode",
        "WanVideoContextOptions",
        "WanVideoScheduler",
        "WanVideoSamplerSettings",
        "WanVideoSamplerFromSettings",
    ),
    "comfyui_controlnet_aux": ("DWPreprocessor",),
}
# KJNodes builds its mappings from a NODE_CONFIG table; the others write the dict itself.
NODE_CONFIG_STYLE = frozenset({"ComfyUI-KJNodes"})


def upstream_dir() -> Path:
    """shared/upstream beside the repo (PODFORGE_UPSTREAM overrides)."""
    return Path(os.environ.get("PODFORGE_UPSTREAM", REPO.parent / "shared" / "upstream"))


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


def _files(name: str, upstream: Path) -> dict[str, bytes]:
    source = upstream / name
    files: dict[str, bytes] = {}
    for path in sorted(source.rglob("*")):
        if path.is_file():
            files[path.relative_to(source).as_posix()] = path.read_bytes()
    if name == "ComfyUI":
        files["main.py"] = (STANDINS / "comfyui_main.py").read_bytes()
        files["nodes.py"] = _registrations(name).encode()
    else:
        init = (STANDINS / "node_init.py").read_text()
        files["__init__.py"] = (init + _registrations(name)).encode()
    return files


def _registrations(name: str) -> str:
    types = STANDIN_NODE_TYPES.get(name, ())
    if name in NODE_CONFIG_STYLE:
        rows = "".join(f'    "{t}": {{"class": object, "name": "{t}"}},\n' for t in types)
        return (
            f"\nNODE_CONFIG = {{\n{rows}}}\n"
            "NODE_CLASS_MAPPINGS = {name: row['class'] for name, row in NODE_CONFIG.items()}\n"
        )
    rows = "".join(f'    "{t}": object,\n' for t in types)
    return f"\nNODE_CLASS_MAPPINGS = {{\n{rows}}}\n"


def _commit_repo(bare: Path, files: dict[str, bytes]) -> list[str]:
    """A bare repository with two commits (the pin tests move between them)."""
    work = bare.with_suffix(".work")
    work.mkdir(parents=True)
    _git(work, "init", "-q", "-b", "main")
    for relative, data in files.items():
        target = work / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    _git(work, "add", "-A")
    _git(work, "commit", "-q", "-m", "upstream files and a stand-in entry point")
    first = _git(work, "rev-parse", "HEAD")
    (work / "SANDBOX_REVISION").write_text("2\n")
    _git(work, "add", "-A")
    _git(work, "commit", "-q", "-m", "a second commit to move pins between")
    second = _git(work, "rev-parse", "HEAD")
    subprocess.run(
        ["git", "clone", "-q", "--bare", str(work), str(bare)], check=True, capture_output=True
    )
    # What lets `git fetch --depth 1 origin <sha>` work, as it does against GitHub.
    _git(bare, "config", "uploadpack.allowAnySHA1InWant", "true")
    shutil.rmtree(work)
    return [first, second]


def build_repos(base: Path) -> dict[str, dict[str, Any]]:
    """Every stand-in repository under ``base``: name -> {path, commits (oldest first)}."""
    upstream = upstream_dir()
    if not (upstream / "PINS.json").exists():
        raise FileNotFoundError(f"{upstream}/PINS.json is missing: set PODFORGE_UPSTREAM")
    base.mkdir(parents=True, exist_ok=True)
    names = sorted(path.name for path in upstream.iterdir() if path.is_dir())
    repos = {}
    for name in names:
        bare = base / f"{name}.git"
        repos[name] = {"path": str(bare), "commits": _commit_repo(bare, _files(name, upstream))}
    conflicting = {
        "requirements.txt": f"{CONFLICTING_REQUIREMENT}\n".encode(),
        "__init__.py": ((STANDINS / "node_init.py").read_text() + _registrations("")).encode(),
    }
    bare = base / f"{CONFLICTING_NODE}.git"
    repos[CONFLICTING_NODE] = {"path": str(bare), "commits": _commit_repo(bare, conflicting)}
    return repos
