"""The pod's venv: podforge's pod-side tools, then one resolved environment for ComfyUI.

The environment (the profile's pinned torch family and flash-attn, ComfyUI's and every
node's requirements) is resolved and installed on the pod by `podforge stack install`; a
stamp records the request it satisfied, so a no-op deploy compares one key and the venv's
versions (the pod-state fact) and runs nothing.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import python, server

from operations import files
from podforge.config import Settings
from podforge.environment import lock_is_installed, stack_request
from podforge.plan import Plan
from podforge.stacks import POD_TOOL_REQUIREMENTS
from podforge.wheel import build_wheel, content_version, package_files
from tasks.desired import Pod
from tasks.streamed import run_streamed

PODFORGE_PACKAGE = Path(__file__).resolve().parent.parent / "podforge"


@functools.cache
def tools_wheel() -> Path:
    """podforge's own wheel, built once per run; its version changes with the code."""
    sources = package_files(PODFORGE_PACKAGE, "podforge")
    return build_wheel(
        Path(tempfile.mkdtemp(prefix="podforge-wheel-")),
        "podforge",
        content_version("0.1.0", sources),
        sources,
        requires=POD_TOOL_REQUIREMENTS,
        console_scripts={"podforge": "podforge.cli:main"},
    )


@deploy("Pod tools")
def install_tools(settings: Settings, plan: Plan, pod: Pod) -> None:
    venv = pod.software["venv"]
    if venv is None:
        server.shell(
            name="Create the pod venv",
            commands=[f"python3 -m venv {settings.venv_dir}"],
        )
    wheel = tools_wheel()
    version = wheel.name.split("-")[1]
    if venv is not None and venv.get("podforge") == version:
        host.noop(f"podforge {version} is installed")
        return
    remote = f"{settings.podforge_dir}/wheels/{wheel.name}"
    files.content(
        name=f"Upload podforge {version}", dest=remote, text=wheel.read_bytes(), digests=pod.files
    )
    server.shell(
        name=f"Install podforge {version} (the pod-side tools)",
        commands=[
            f"{settings.venv_dir}/bin/python -m pip install -q --disable-pip-version-check {remote}"
        ],
    )


@deploy("Python environment")
def install_environment(settings: Settings, plan: Plan, pod: Pod) -> None:
    if not settings.install_python_stack:
        host.noop("install_python_stack is off: the venv holds podforge's tools only")
        return
    request = stack_request(settings, plan)
    stamp = pod.software["stack_stamp"]
    if stamp is not None and stamp.get("key") == request.key():
        drifted = lock_is_installed(stamp["lock"], pod.software["venv"] or {})
        if not drifted:
            host.noop(f"the {request.profile} environment is installed ({len(stamp['lock'])})")
            return
        host.noop(f"the venv drifted from its lock ({', '.join(drifted[:5])}): reinstalling")
    request_file = f"{settings.podforge_dir}/stack-request.json"
    files.content(
        name="Stack request",
        dest=request_file,
        text=request.model_dump_json(indent=2) + "\n",
        digests=pod.files,
    )
    python.call(
        name=f"Resolve, then install the {request.profile} environment",
        function=run_streamed,
        command=(
            f"{settings.venv_dir}/bin/podforge stack install --request {request_file}"
            f" --stamp {settings.stack_stamp} 2>&1"
        ),
        failure="the environment was not installed: see the stack lines above",
    )
