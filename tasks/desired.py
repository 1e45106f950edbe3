"""The desired state of this host and what is there now: read once, at the top of deploy.py.

Settings and the Plan say what the pod should be; three facts (GPU, host, pod state) say
what it is, each in one remote command however many nodes, packages, files and models the
pod holds. Tasks compare the two and nothing else.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from typing import Any, TypedDict

from pyinfra import host, logger
from pyinfra.api.exceptions import DeployError

from facts.gpu import NvidiaGpus
from facts.host import PodHost
from facts.pod import PodState
from podforge.controller.stack import committed_lock, committed_tools_lock
from podforge.core.auth import auth_files
from podforge.core.config import Settings
from podforge.core.errors import PodforgeError
from podforge.core.gpu import GpuReport
from podforge.core.lock import LockInputs, for_pod, lock_file, lock_name
from podforge.core.lock import refresh_command as lock_command
from podforge.core.plan import Plan, PlanError, build_plan
from podforge.core.services import PREFIX, SUPERVISOR_CONF_DIR, SYSTEMD_UNIT_DIR, secrets_dir
from podforge.core.stacks import STACK_FEATURES, STACK_PROFILES, TOOLS_LOCK
from podforge.pod import stamps
from podforge.pod.stamps import ModelStatus
from podforge.pod.verify import judge
from podforge.probe.state import Files, Software
from podforge.settings import load
from podforge.workflows.files import WorkflowFile, with_workflows
from podforge.workflows.files import workflow_files as read_workflow_files
from podforge.workflows.fitting import fitted_state, user_pattern
from podforge.workflows.graph import WorkflowError

# ComfyUI's model folders podforge fills (ComfyUI's own names).
MODEL_DIRS = (
    "diffusion_models",
    "text_encoders",
    "clip_vision",
    "vae",
    "loras",
    "annotators",
    "detection",  # ComfyUI-WanAnimatePreprocess's ONNX pose and person detectors
)

# Each host's Plan in this run, for whoever reports on it (python -m fleet rollout's per-pod
# report); the recipe itself never reads it back.
PLANS: dict[str, Plan] = {}


class HostState(TypedDict):
    """The PodHost fact."""

    init: str
    systemd: bool
    disk_path: str
    disk_free_kib: int
    mem_total_kib: int
    mem_available_kib: int
    python: tuple[int, int, int] | None
    machine: str
    os: str


@dataclass(frozen=True)
class Pod:
    """What is on this pod now, as the facts read it before any change."""

    host: HostState
    software: Software  # as the pod-state probe read it
    workflows: dict[str, Any] | None  # fitting.fitted_state of its stamp (None: none installed)
    files: Files
    models: dict[str, ModelStatus]  # dest -> its status
    serving: list[str] | None  # verify.judge's problems of PodState["serving"] (pod phase)


def settings() -> Settings:
    """host.data (group_data < inventory < --data) with the environment on top.

    In the boot phase (start.sh, on the pod itself) the settings the last deploy left on
    the pod come first: the wish is the same, only the GPU may differ.
    """
    data = host.data.dict()
    saved_in = None
    if data.get("phase") == "boot" or os.environ.get("PHASE") == "boot":
        if host.name != "@local":
            raise DeployError(f"{host.name}: phase=boot runs on the pod itself (@local)")
        saved_in = data.get("podforge_dir") or Settings.model_fields["podforge_dir"].default
    try:
        wanted = load(data, saved_in=saved_in)
    except PodforgeError as error:
        raise DeployError(f"{host.name}: {error}") from None
    if wanted.phase == "boot" or not wanted.workflows:
        return wanted  # the saved settings hold what the workflows added
    try:
        return with_workflows(wanted)[0]
    except WorkflowError as error:
        raise DeployError(f"{host.name}: workflows: {error}") from None


def workflow_files(wanted: Settings) -> list[WorkflowFile]:
    """The workflows the settings name (``settings`` added their needs already; the files
    are read once per run)."""
    return [] if wanted.phase == "boot" else read_workflow_files(wanted)


def pod_host(wanted: Settings) -> HostState:
    return host.get_fact(PodHost, models_dir=wanted.models_dir)


def plan(wanted: Settings, pod_host: HostState) -> Plan:
    """The Plan for this host's real GPUs (none are read in the image phase)."""
    gpus = GpuReport() if wanted.phase == "image" else GpuReport(**host.get_fact(NvidiaGpus))
    try:
        chosen = build_plan(wanted, gpus, pod_host["python"], pod_host["machine"])
    except PlanError as error:
        raise DeployError(f"{host.name}: {error}") from None
    PLANS[host.name] = chosen
    return chosen


def model_dirs(wanted: Settings) -> list[str]:
    return [posixpath.join(wanted.models_dir, sub) for sub in MODEL_DIRS]


def stamp(path: str, text: str | None) -> dict[str, Any] | None:
    """A stamp the pod-state fact read, parsed (stamps.parsed: None when there is none or it
    is damaged, which the deploy says: the work it records is done again)."""
    record = stamps.parsed(text)
    if text is not None and record is None:
        logger.warning(f"{host.print_prefix}{path} is damaged (not a JSON object): redoing it")
    return record


def pod(wanted: Settings, plan: Plan, pod_host: HostState) -> Pod:
    """Everything tasks compare against, in one remote command, judged."""
    # Whether the pod serves now; verify uses it when the deploy changes nothing.
    serving = (
        {
            "comfyui": [instance.model_dump(mode="json") for instance in plan.comfyui],
            "r2sync": wanted.enable_r2_sync,
            "log_dir": f"{wanted.workspace_dir}/logs",
        }
        if wanted.phase == "pod"
        else None
    )
    state = host.get_fact(
        PodState,
        software={
            "repos": {path: pin.commit for path, pin in wanted.checkouts().items()},
            "venv": wanted.venv_dir,
            "tools": wanted.tools_dir,
            "deployer": f"{wanted.podforge_dir}/deployer",
            "workflows": wanted.workflows_stamp,
        },
        files={
            "patterns": [
                f"{wanted.podforge_dir}/*",
                f"{wanted.podforge_dir}/secrets/*",
                f"{wanted.podforge_dir}/wheels/*",
                f"{wanted.podforge_dir}/deploy/VERSION",
                wanted.start_script,
                f"{wanted.comfyui_dir}/extra_model_paths.yaml",
                user_pattern(wanted.comfyui_dir),  # the fitted ones among them
                f"{auth_files(wanted.workspace_dir).directory}/*",
                f"{SUPERVISOR_CONF_DIR}/{PREFIX}*.conf",
                f"{SYSTEMD_UNIT_DIR}/{PREFIX}*.service",
            ],
            "dirs": [
                *model_dirs(wanted),
                f"{wanted.comfyui_dir}/output",
                secrets_dir(wanted),
                auth_files(wanted.workspace_dir).directory,
                f"{wanted.workspace_dir}/logs",
            ],
        },
        models=[model.dest for model in plan.models],
        serving=serving,
    )
    workflows = stamp(wanted.workflows_stamp, state["software"]["workflows"])
    return Pod(
        host=pod_host,
        software=state["software"],
        workflows=fitted_state(workflows, state["files"]["files"]),
        files=state["files"],
        models={read["dest"]: stamps.status_of(read) for read in state["models"]},
        serving=(
            None
            if serving is None
            else judge(state["serving"], serving["comfyui"], serving["r2sync"])[0]
        ),
    )


@dataclass(frozen=True)
class StackLock:
    """The committed lock of this host's stack profile, or why it cannot be installed."""

    path: str  # relative to the repo, as people see it
    text: str
    problem: str | None  # preflight refuses the host with this line
    # What it installs on this pod (its Python and machine), name -> version; read once here.
    installs: dict[str, str] = field(default_factory=dict)


def stack_lock(wanted: Settings, plan: Plan, pod: Pod) -> StackLock:
    """The profile's lock, checked against today's inputs before anything changes."""
    profile = STACK_PROFILES[plan.python_stack.profile]
    feature = STACK_FEATURES[plan.python_stack.feature] if plan.python_stack.feature else None
    # A checkout on this machine at its pin (the image, the boot phase) is read in place.
    local = {
        pin.name: dest
        for dest, pin in wanted.checkouts().items()
        if host.name == "@local" and (pod.software["repos"][dest] or {}).get("head") == pin.commit
    }
    name = lock_name(profile.name, feature)
    return _for_this_pod(name, committed_lock(wanted, profile, local, feature), pod)


def tools_lock(pod: Pod) -> StackLock:
    """The pod tools' lock (locks/tools.txt), checked against pyproject.toml's list."""
    return _for_this_pod(TOOLS_LOCK, committed_tools_lock(), pod)


def _for_this_pod(
    profile: str, committed: tuple[str, LockInputs | None, str | None], pod: Pod
) -> StackLock:
    """A committed lock (``committed_lock``'s answer) with what it installs on this pod."""
    path = lock_file(profile)
    text, locked, problem = committed
    if problem or locked is None:
        return StackLock(path, text, problem)
    python, machine = pod.host["python"], pod.host["machine"]
    if python is None:
        return StackLock(path, text, None)  # preflight refuses the host: no python3
    entries = {entry.name: entry.version for entry in for_pod(text, python, machine)}
    if not entries:
        here = f"Python {python[0]}.{python[1]} on {machine}"
        covered = "; ".join(locked.targets)
        return StackLock(
            path,
            text,
            f"{path} has nothing for {here} (it covers {covered}): add the target to"
            f" LOCK_TARGETS (podforge/core/lock.py), then run `{lock_command(profile)}`"
            " and commit it",
        )
    return StackLock(path, text, None, entries)
