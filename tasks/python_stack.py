"""The pod's venvs: the tools' own (uv, exactly the tools lock and podforge's wheel), then
ComfyUI's (exactly the committed stack lock, flash-attn and the feature's built wheels),
both installed by the tools' uv.

Nothing resolves on the pod. `uv pip sync` makes a venv hold exactly the lock's entries
for the pod's Python and machine (hash-checked) and the wheels no index serves beside them
(podforge's own; flash-attn's release wheel and mmcv through the wheelhouse, each with its
sha256); anything else is removed. A no-op compares each venv's distributions (the pod-state
fact) with that list and runs nothing; a drifted venv is synced back.

ComfyUI's venv syncs in the background (``podforge job``, as the models' fetch): its
gigabytes download first (the models' fetch waits for them) while ComfyUI and its nodes are
cloned, and the deploy awaits it after.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shlex
import uuid
from dataclasses import dataclass
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
from podforge.core.lock import drift, seeds_to_remove, sync_commands, sync_text
from podforge.core.plan import BuiltWheel, Plan
from podforge.core.services import env_paths, r2_configured
from podforge.core.stacks import STACK_FEATURES, UV
from tasks.desired import Pod, StackLock
from tasks.streamed import run_streamed

UV_VERSION = UV.split("==")[1]


def venv_wanted_file(settings: Settings) -> str:
    """name -> version of all the venv holds once synced (`podforge verify --venv-wanted`)."""
    return f"{settings.podforge_dir}/stack-venv.json"


def tools_wheel(settings: Settings) -> Path:
    """podforge's own wheel (its version changes with the code), built by the controller's
    uv: the laptop's (the uv package), or on the pod as its own controller (the image's
    build, boot) the tools' (the image's stack layer made their venv)."""
    if settings.phase == "pod":
        return _built_by(uv_binary())
    return _built_by(f"{settings.tools_dir}/bin/uv")


@functools.cache
def _built_by(uv: str) -> Path:
    try:
        return built_tools_wheel(uv, cache_dir() / "wheels")
    except ToolsWheelError as error:
        raise DeployError(f"{host.name}: {error}") from None


@deploy("Pod tools")
def install_tools(settings: Settings, plan: Plan, pod: Pod, lock: StackLock) -> None:
    """The tools' own venv: uv from PyPI (what installs the locks), then exactly the tools
    lock and podforge's wheel. Small (~50 MB), so it is in within seconds, before the stack."""
    tools = settings.tools_dir
    present = pod.software["tools"]
    if present is None:
        server.shell(name="Create the tools venv", commands=[f"python3 -m venv {tools}"])
    if present is None or present.get("uv") != UV_VERSION:
        # A venv the lock was synced into holds no pip (it is not in the lock): bring it back.
        bootstrap = (
            [] if present is None or "pip" in present else [f"{tools}/bin/python -m ensurepip"]
        )
        server.shell(
            name=f"Install uv {UV_VERSION}",
            commands=[
                *bootstrap,
                f"{tools}/bin/python -m pip install -q --disable-pip-version-check {UV}",
            ],
        )
    wheel = _upload_wheel(settings, pod)
    wanted = {**lock.installs, "podforge": _version(wheel)}
    sync = _sync(
        settings,
        pod,
        tools,
        present,
        lock,
        wanted,
        [_wheel_line(settings, wheel)],
        f"{settings.podforge_dir}/tools-sync.txt",
    )
    # In the foreground: the models' fetch and the stack's sync run from this venv.
    _run(sync)


def _upload_wheel(settings: Settings, pod: Pod) -> Path:
    """podforge's wheel on the pod, where the tools' sync file names it."""
    wheel = tools_wheel(settings)
    pod_files.content(
        name=f"Upload podforge {_version(wheel)}",
        dest=_remote_wheel(settings, wheel),
        text=wheel.read_bytes(),
        digests=pod.files,
    )
    return wheel


def _version(wheel: Path) -> str:
    return wheel.name.split("-")[1]


def _remote_wheel(settings: Settings, wheel: Path) -> str:
    return f"{settings.podforge_dir}/wheels/{wheel.name}"


def _wheel_line(settings: Settings, wheel: Path) -> str:
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    return f"podforge @ file://{_remote_wheel(settings, wheel)} --hash=sha256:{digest}"


@dataclass(frozen=True)
class Sync:
    """A venv's sync this deploy runs: its operation's name, its shell command, and what its
    failure says."""

    name: str
    command: str
    failure: str


# Each host's stack sync running in the background in this run: (its job directory, the
# sync), from ``start_environment`` to ``install_environment``.
STACK_SYNCS: dict[str, tuple[str, Sync]] = {}


@deploy("Python environment")
def start_environment(settings: Settings, plan: Plan, pod: Pod, lock: StackLock) -> str | None:
    """The venv's sync, when it differs from the lock, started in the background
    (``podforge job``): its downloads run while ComfyUI and its nodes are cloned. Its job's
    directory (None: the venv holds the lock already)."""
    built = plan.python_stack.built
    wanted = dict(lock.installs) | {wheel.name: wheel.version for wheel in built}
    pod_files.content(
        name="What the venv holds, for verify",
        dest=venv_wanted_file(settings),
        text=json.dumps(wanted, indent=1, sort_keys=True) + "\n",
        digests=pod.files,
    )
    present = pod.software["venv"]
    if present is None:
        server.shell(name="Create the pod venv", commands=[f"python3 -m venv {settings.venv_dir}"])
    sync = _sync(
        settings,
        pod,
        settings.venv_dir,
        present,
        lock,
        wanted,
        [],
        f"{settings.podforge_dir}/stack-sync.txt",
        built,
        STACK_FEATURES[plan.python_stack.feature].dropped if plan.python_stack.feature else (),
    )
    if sync is None:
        STACK_SYNCS.pop(host.name, None)  # one process may deploy again (fleet, sandbox)
        return None
    # A directory of its own: a job an interrupted deploy left running never writes here.
    job = f"{settings.podforge_dir}/jobs/stack-{uuid.uuid4().hex[:12]}"
    STACK_SYNCS[host.name] = (job, sync)
    server.shell(
        name=f"Start syncing {settings.venv_dir} to {lock.path} (in the background)",
        commands=[
            shlex.join(
                [f"{settings.tools_dir}/bin/podforge", "job", "start", job, "--"]
                + ["sh", "-c", sync.command]
            )
        ],
    )
    return job


@deploy("Python environment")
def install_environment(settings: Settings) -> bool:
    """The sync ``start_environment`` began: uv's lines until it ends; its failure fails the
    host with them. Whether the venv was synced (ComfyUI must then restart: it imported the
    old one)."""
    started = STACK_SYNCS.get(host.name)
    if started is None:
        return False
    job, sync = started
    python.call(
        name=sync.name,
        function=run_streamed,
        command=shlex.join([f"{settings.tools_dir}/bin/podforge", "job", "wait", job]) + " 2>&1",
        failure=sync.failure,
    )
    return True


def _sync(
    settings: Settings,
    pod: Pod,
    venv: str,
    present: dict[str, str] | None,
    lock: StackLock,
    wanted: dict[str, str],
    beside: list[str],
    sync_file: str,
    built: list[BuiltWheel] | None = None,
    dropped: tuple[str, ...] = (),
) -> Sync | None:
    """What makes ``venv`` hold exactly ``lock`` and the wheels ``beside`` it (``wanted``:
    what that installs, name -> version; ``present``: what the venv holds, None: no venv
    yet), by the tools' uv, and the wheelhouse's ``built`` wheels; None: it does already."""
    pod_files.content(
        name=f"{lock.path} and the wheels beside it",
        dest=sync_file,
        text=sync_text(lock.text, beside),
        digests=pod.files,
    )
    differences = drift(wanted, present or {})
    if not differences:
        host.noop(f"{venv} holds exactly {lock.path} ({len(wanted)} distributions)")
        return None
    # A venv `python3 -m venv` makes in this deploy holds pip, and up to Python 3.11
    # setuptools (uv skips, with a warning, one that is not there).
    seeds = seeds_to_remove(wanted, present or {"pip": "bundled", "setuptools": "bundled"})
    shown = ", ".join(differences[:4]) + (", ..." if len(differences) > 4 else "")

    def synced_to(file: str, installs: dict[str, str]) -> list[str]:
        return sync_commands(
            venv, settings.uv_cache_dir, file, installs, seeds, settings.tools_dir, dropped
        )

    commands = []
    if built:
        # What the wheels are built against (torch) first; then each found on the volume,
        # fetched from the fleet's bucket, or made once (a release asset fetched, an sdist
        # built); then the lock and them, hashed.
        without = {name: v for name, v in wanted.items() if name not in {w.name for w in built}}
        lines = [_built_line(settings, wheel) for wheel in built]
        commands += [
            *synced_to(sync_file, without),
            *map(functools.partial(_ensure_command, settings), built, lines),
            f"cat {sync_file} {' '.join(lines)} > {sync_file}.built",
        ]
        sync_file = f"{sync_file}.built"
    return Sync(
        name=f"Install {lock.path} exactly ({len(differences)} differ: {shown})",
        command=" && ".join([*commands, *synced_to(sync_file, wanted)]),
        failure=f"{venv} was not synced to {lock.path}: see uv's lines above",
    )


def _run(sync: Sync | None) -> None:
    if sync is not None:
        python.call(
            name=sync.name,
            function=run_streamed,
            command=f"{sync.command} 2>&1",
            failure=sync.failure,
        )


def _built_line(settings: Settings, wheel: BuiltWheel) -> str:
    """The file `podforge wheelhouse ensure` writes the wheel's hashed sync line into."""
    return f"{settings.podforge_dir}/wheelhouse-{wheel.name}.txt"


def _ensure_command(settings: Settings, wheel: BuiltWheel, line_file: str) -> str:
    """`podforge wheelhouse ensure` of one wheel for ComfyUI's venv: the bucket's settings from
    the tools' 0600 r2.env, never a command line."""
    r2 = f"R2_ENV_FILE={env_paths(settings)['r2']} " if r2_configured(settings) else ""
    argv = [
        f"{settings.tools_dir}/bin/podforge", "wheelhouse", "ensure",
        f"{wheel.name}=={wheel.version}",
        "--source", wheel.source,
        *(("--source-sha256", wheel.source_sha256) if wheel.source_sha256 else ()),
        "--python", f"{settings.venv_dir}/bin/python", "--home", settings.wheelhouse_dir,
        *(part for name in wheel.against for part in ("--against", name)),
        *(part for name, value in sorted(wheel.environment.items())
          for part in ("--env", f"{name}={value}")),
        "--line-to", line_file,
    ]  # fmt: skip
    return r2 + shlex.join(argv)
