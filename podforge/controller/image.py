"""The image build's stack layer (docker/Dockerfile): system packages, ComfyUI and its nodes
at their pins, and the committed stack lock, installed from their inputs alone.

A Dockerfile RUN runs again whenever a file copied before it changed. The stack (the torch
family, ComfyUI's and every node's requirements: most of a build) depends on a few settings,
the pins and the lock, not on the rest of podforge. So a build stage of its own writes those
inputs (``inputs``: the whole repo, settings from the build arguments; the lock's text is in
them, so the layer's cache key is the lock), the image copies only them, and ``install``
installs from them: an unchanged stack is an unchanged copy, and its layer comes from the
build cache. The deploy that runs next finds the packages, the checkouts at their pins and
the lock installed, and adds podforge's own wheel (it changes with the code) beside it.

    python -m podforge.controller.image inputs DIR                       # a stage with the repo
    PYTHONPATH=DIR/tools python -m podforge.controller.image install DIR  # the stack layer

Nothing at module level imports more than ``STACK_MODULES``: they are all the layer has.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from podforge.core.errors import PodforgeError
from podforge.probe.state import installed_debs

if TYPE_CHECKING:
    from podforge.core.config import Settings
    from podforge.core.plan import Plan

INPUTS_FILE = "stack-inputs.json"
# What the stack layer runs with, copied beside the inputs (tools/podforge/...).
STACK_MODULES = (
    "__init__.py",
    "controller/__init__.py",
    "controller/image.py",
    "core/__init__.py",
    "core/errors.py",
    "probe/__init__.py",
    "probe/state.py",
)


class Checkout(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dest: str
    url: str
    commit: str


class StackInputs(BaseModel):
    """Everything the stack layer installs; the same values the deploy compares against."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    debs: list[str]
    checkouts: list[Checkout]
    tools: str  # the pod tools' venv: uv is installed there with its pip, and installs both
    uv: str  # the uv requirement
    tools_sync_file: str
    tools_sync: str  # the tools lock (podforge's own wheel comes with the code, in the deploy)
    venv: str
    sync_file: str
    sync: str  # the lock and pinned release assets (core/lock.py sync_text)
    commands: list[str]  # core/lock.py sync_commands, the tools venv's, then ComfyUI's


class ImageError(PodforgeError, RuntimeError):
    """A step of the stack layer failed; the message says which and why, in one line."""


def stack_inputs(settings: Settings, plan: Plan) -> StackInputs:
    """What the stack layer installs; ImageError when the committed lock cannot be used."""
    from podforge.controller.stack import committed_lock, committed_tools_lock
    from podforge.core.lock import for_pod, seeds_to_remove, sync_commands, sync_text
    from podforge.core.stacks import STACK_FEATURES, STACK_PROFILES, UV

    stack = plan.python_stack
    feature = STACK_FEATURES[stack.feature] if stack.feature else None
    # The profile's or the feature's lock (OpenMMLab's), and beside it each release asset
    # whose sha256 is pinned (flash-attn's), straight from its URL, hash-checked: the layer
    # has no wheelhouse (podforge comes later, with the code). The rest (an unpinned asset,
    # mmcv) comes in the deploy step, through the wheelhouse, once the layer's torch is in.
    text, _, problem = committed_lock(settings, STACK_PROFILES[stack.profile], feature=feature)
    tools_text, _, tools_problem = committed_tools_lock()
    if problem or tools_problem:
        raise ImageError(problem or tools_problem or "")
    python = sys.version_info[:3]
    installed = {entry.name: entry.version for entry in for_pod(text, python, platform.machine())}
    tools_installed = {
        entry.name: entry.version for entry in for_pod(tools_text, python, platform.machine())
    }
    beside = []
    for wheel in stack.built:
        if wheel.prebuilt and wheel.source_sha256:
            beside.append(f"{wheel.name} @ {wheel.source} --hash=sha256:{wheel.source_sha256}")
            installed[wheel.name] = wheel.version
    sync_file = f"{settings.podforge_dir}/stack-sync.txt"
    tools_sync_file = f"{settings.podforge_dir}/tools-sync.txt"
    # The layer makes both venvs with `python3 -m venv`: pip is in them (setuptools too, up to
    # Python 3.11).
    bundled = ["pip", "setuptools"]
    return StackInputs(
        debs=list(plan.system_packages),
        checkouts=[
            Checkout(dest=dest, url=pin.url, commit=pin.commit)
            for dest, pin in settings.checkouts().items()
        ],
        tools=settings.tools_dir,
        uv=UV,
        tools_sync_file=tools_sync_file,
        tools_sync=sync_text(tools_text, []),
        venv=settings.venv_dir,
        sync_file=sync_file,
        sync=sync_text(text, beside),
        commands=[
            *sync_commands(
                settings.tools_dir,
                settings.uv_cache_dir,
                tools_sync_file,
                tools_installed,
                seeds_to_remove(tools_installed, bundled),
            ),
            *sync_commands(
                settings.venv_dir,
                settings.uv_cache_dir,
                sync_file,
                installed,
                seeds_to_remove(installed, bundled),
                uv_from=settings.tools_dir,
                dropped=feature.dropped if feature else (),
            ),
        ],
    )


def write_inputs(directory: Path, inputs: StackInputs) -> None:
    """The inputs file and the modules that install it; nothing else (the layer's cache key)."""
    tools = directory / "tools" / "podforge"
    tools.mkdir(parents=True)
    (directory / INPUTS_FILE).write_text(inputs.model_dump_json(indent=2) + "\n")
    package = Path(__file__).resolve().parents[1]
    for name in STACK_MODULES:
        (tools / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(package / name, tools / name)


def install(directory: Path) -> None:
    inputs = StackInputs.model_validate_json((directory / INPUTS_FILE).read_text())
    missing = sorted(set(inputs.debs) - set(installed_debs()))
    if missing:
        _say(f"system packages: {', '.join(missing)}")
        _run(["apt-get", "update", "-q"])
        _run(["apt-get", "install", "-q", "-y", "--no-install-recommends", *missing])
    for checkout in inputs.checkouts:
        _check_out(checkout)
    for venv in (inputs.tools, inputs.venv):
        if not Path(f"{venv}/bin/python").exists():
            _run(["python3", "-m", "venv", venv])
    tools_python = f"{inputs.tools}/bin/python"
    _run([tools_python, "-m", "pip", "install", "-q", "--disable-pip-version-check", inputs.uv])
    for path, text in (
        (inputs.tools_sync_file, inputs.tools_sync),
        (inputs.sync_file, inputs.sync),
    ):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
    for command in inputs.commands:
        _say(command.split("/bin/uv ", 1)[1])
        if subprocess.run(["sh", "-c", command]).returncode != 0:
            raise ImageError("a lock was not installed: see uv's lines above")


def _check_out(checkout: Checkout) -> None:
    """Like operations/git.pinned_checkout on a fresh directory: one commit, fetched alone."""
    dest = Path(checkout.dest)
    if dest.exists():
        raise ImageError(
            f"{dest} exists in the base image: the stack layer checks out into new dirs"
        )
    _say(f"checkout: {checkout.url} at {checkout.commit[:12]} into {dest}")
    dest.mkdir(parents=True)
    git = ["git", "-C", str(dest)]
    _run([*git, "init", "-q"])
    _run([*git, "remote", "add", "origin", checkout.url])
    try:
        _run([*git, "fetch", "-q", "--depth", "1", "origin", checkout.commit])
    except ImageError:
        raise ImageError(
            f"{checkout.url} has no commit {checkout.commit} (or cannot be reached)"
        ) from None
    _run([*git, "-c", "advice.detachedHead=false", "checkout", "-q", "--detach", checkout.commit])


def _run(argv: Sequence[str]) -> None:
    if subprocess.run(argv).returncode != 0:
        raise ImageError(f"failed: {' '.join(argv)}")


def _say(line: str) -> None:
    print(f"image: {line}", flush=True)


def _inputs_from_environment(directory: Path) -> None:
    """The stack-inputs stage: settings from the build arguments (the environment)."""
    from podforge.core.gpu import GpuReport
    from podforge.core.plan import build_plan
    from podforge.settings import load

    try:
        # group_data as the deploy in the next stage reads it; the build arguments on top.
        settings = load({"phase": "image"}, with_group_data=True)
        plan = build_plan(settings, GpuReport(), sys.version_info[:3], platform.machine())
    except PodforgeError as error:
        raise ImageError(str(error)) from None
    write_inputs(directory, stack_inputs(settings, plan))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m podforge.controller.image", description=__doc__.split("\n")[0]
    )
    verbs = parser.add_subparsers(dest="verb", required=True)
    verbs.add_parser(
        "inputs", help="write the stack's inputs (settings from the environment)"
    ).add_argument("dir", type=Path)
    verbs.add_parser("install", help="install the stack from its inputs").add_argument(
        "dir", type=Path
    )
    args = parser.parse_args(argv)
    try:
        if args.verb == "inputs":
            _inputs_from_environment(args.dir)
        else:
            install(args.dir)
    except ImageError as error:
        print(f"podforge image: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
