"""The pod's venv: uv, then exactly the committed stack lock, podforge's tools and flash-attn.

Nothing resolves on the pod. `uv pip sync` makes the venv hold exactly the lock's entries
for the pod's Python and machine (hash-checked), podforge's own wheel and flash-attn's
release wheel; anything else is removed. A no-op compares the venv's distributions (the
pod-state fact) with that list and runs nothing; a drifted venv is synced back.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import python, server

from operations import pod_files
from podforge.controller.stack import uv_binary
from podforge.controller.tools import ToolsWheelError
from podforge.controller.tools import tools_wheel as built_tools_wheel
from podforge.controller.upstream import cache_dir
from podforge.core.config import Settings
from podforge.core.lock import (
    drift,
    release_wheel,
    seeds_to_remove,
    sync_commands,
    sync_text,
)
from podforge.core.plan import Plan
from podforge.core.stacks import UV
from tasks.desired import Pod, StackLock
from tasks.streamed import run_streamed

UV_VERSION = UV.split("==")[1]


def venv_wanted_file(settings: Settings) -> str:
    """name -> version of all the venv holds once synced (`podforge verify --venv-wanted`)."""
    return f"{settings.podforge_dir}/stack-venv.json"


def tools_wheel(settings: Settings) -> Path:
    """podforge's own wheel (its version changes with the code), built by the controller's
    uv: the laptop's (the uv package), or on the pod as its own controller (the image's
    build, boot) the one the stack lock put in the pod's venv."""
    if settings.phase == "pod":
        return _built_by(uv_binary())
    return _built_by(f"{settings.venv_dir}/bin/uv")


@functools.cache
def _built_by(uv: str) -> Path:
    try:
        return built_tools_wheel(uv, cache_dir() / "wheels")
    except ToolsWheelError as error:
        raise DeployError(f"{host.name}: {error}") from None


@deploy("Pod tools")
def install_uv(settings: Settings, plan: Plan, pod: Pod) -> None:
    """The venv and uv in it, from PyPI: what installs the lock (the lock then keeps it)."""
    venv = pod.software["venv"]
    if venv is None:
        server.shell(
            name="Create the pod venv",
            commands=[f"python3 -m venv {settings.venv_dir}"],
        )
    elif venv.get("uv") == UV_VERSION:
        host.noop(f"uv {UV_VERSION} is in the venv")
        return
    python_bin = f"{settings.venv_dir}/bin/python"
    # A venv the lock was synced into holds no pip (it is not in the lock): bring it back.
    bootstrap = [] if venv is None or "pip" in venv else [f"{python_bin} -m ensurepip"]
    server.shell(
        name=f"Install uv {UV_VERSION}",
        commands=[*bootstrap, f"{python_bin} -m pip install -q --disable-pip-version-check {UV}"],
    )


@deploy("Python environment")
def install_environment(settings: Settings, plan: Plan, pod: Pod, lock: StackLock) -> bool:
    """Whether the venv is synced (ComfyUI must then restart: it imported the old one)."""
    wheel = tools_wheel(settings)
    version = wheel.name.split("-")[1]
    wanted = dict(lock.installs)
    wanted["podforge"] = version
    remote_wheel = f"{settings.podforge_dir}/wheels/{wheel.name}"
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    beside = [f"podforge @ file://{remote_wheel} --hash=sha256:{digest}"]
    flash_attn = plan.python_stack.flash_attn_wheel
    if flash_attn:
        # A GitHub release asset, not a PyPI wheel: chosen by the plan for this pod's Python.
        line, wanted["flash-attn"] = release_wheel("flash-attn", flash_attn)
        beside.append(line)
    sync_file = f"{settings.podforge_dir}/stack-sync.txt"
    pod_files.content(
        name=f"{lock.path}, podforge {version} and flash-attn",
        dest=sync_file,
        text=sync_text(lock.text, beside),
        digests=pod.files,
    )
    pod_files.content(
        name="What the venv holds, for verify",
        dest=venv_wanted_file(settings),
        text=json.dumps(wanted, indent=1, sort_keys=True) + "\n",
        digests=pod.files,
    )
    # A venv made by `python3 -m venv` (here, or before the deploy) holds pip.
    present = pod.software["venv"] or {"pip": "bundled"}
    differences = drift(wanted, pod.software["venv"] or {})
    if not differences:
        host.noop(f"the venv holds exactly {lock.path} ({len(wanted)} distributions)")
        return False
    pod_files.content(
        name=f"Upload podforge {version}",
        dest=remote_wheel,
        text=wheel.read_bytes(),
        digests=pod.files,
    )
    shown = ", ".join(differences[:4]) + (", ..." if len(differences) > 4 else "")
    python.call(
        name=f"Install {lock.path} exactly ({len(differences)} differ: {shown})",
        function=run_streamed,
        command=" && ".join(
            sync_commands(
                settings.venv_dir,
                settings.uv_cache_dir,
                sync_file,
                wanted,
                seeds_to_remove(wanted, present),
            )
        )
        + " 2>&1",
        failure=f"the venv was not synced to {lock.path}: see uv's lines above",
    )
    return True
