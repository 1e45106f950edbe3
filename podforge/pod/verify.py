"""`podforge verify`: the pod serves what its plan says (run on the pod from the tools' venv;
``--venv`` names ComfyUI's).

- every ComfyUI instance answers ``GET /system_stats`` on its port, with the plan's flags;
- r2sync (when on) runs (RUNNING under supervisor, active/running under systemd) and its
  ``--test`` round trip passes;
- on each device a ComfyUI uses (not `--cpu`), torch in the venv has kernels for the
  device's architecture and really runs one (a half-precision matmul and an elementwise op,
  synchronized): a Blackwell GPU under a torch without sm_100/sm_120 is found here, not at
  the first job;
- the venv holds exactly what the deploy synced (the lock, flash-attn, the wheelhouse's);
- what the plan's stack feature needs imports in the venv (OpenMMLab: mmcv.ops, mmpose);
- each workflow podforge fitted to the pod finds its model files and node types.

Each problem names the program, the port, the cause and the program's last log lines.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from podforge.core.auth import Credentials
from podforge.core.gpu import arch_runs, sm
from podforge.core.lock import drift
from podforge.core.stacks import STACK_PROFILES
from podforge.pod.comfyui_checks import ComfyClient, node_problems, smoke_prompt
from podforge.probe.serving import (
    SUPERVISOR_SOCKET,
    comfyui_address,
    comfyui_port,
    companions,
    observe,
)
from podforge.probe.state import venv_distributions
from podforge.workflows.fitting import user_workflows_list
from podforge.workflows.pod import check_workflows

# The state a program that serves is in, under each manager.
RUNNING = {"supervisor": "RUNNING", "systemd": "active/running"}


def _starting(state: str | None) -> bool:
    """supervisor's STARTING/BACKOFF, systemd's activating (start, auto-restart)."""
    return state is not None and (
        state in ("STARTING", "BACKOFF") or state.startswith("activating/")
    )


def _comfyui_cause(answer: dict[str, str], args: list[str]) -> tuple[str | None, bool]:
    """(why an instance's /system_stats answer (serving.observe's) is not the plan's flags,
    whether that may pass by itself: it does not answer yet, as while ComfyUI loads)."""
    try:
        if "error" in answer:
            raise OSError(answer["error"])
        argv = json.loads(answer["body"])["system"]["argv"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"GET /system_stats failed: {error}", True
    if argv[1:] == args:
        return None, False
    return f"runs with {' '.join(argv[1:])!r}, the plan says {' '.join(args)!r}", False


def judge(
    seen: dict[str, Any], comfyui: list[dict[str, Any]], r2sync: bool
) -> tuple[list[str], bool]:
    """(what keeps the pod from serving, whether any of it may pass by itself: a program
    still starting, a ComfyUI that does not answer yet) of what serving.observe saw. Each
    ComfyUI instance (the plan's ``comfyui`` entries) answers with its flags and, under its
    manager, stays running; r2sync and the login's nginx (when on) run."""
    manager, states = seen["manager"], seen["states"]
    if isinstance(states, str):
        return [f"{seen['where']} does not answer: {states}"], False
    problems, pending = [], False
    for instance, answer in zip(comfyui, seen["answers"], strict=True):
        program = f"comfyui-{instance['device']}"
        cause, may_pass = _comfyui_cause(answer, instance["args"])
        state = states.get(program)
        # Under its manager it must also have stayed up (RUNNING after startsecs, not STARTING).
        if cause is None and state not in (None, RUNNING[manager]):
            cause = f"{manager} reports {state}"
        if cause:
            pending = pending or may_pass or _starting(state)
            problems.append(
                f"{program} (port {instance['port']}, {state or f'not under {manager}'}):"
                f" {cause}; last log lines: {seen['logs'][program]}"
            )
    for program in companions(comfyui, r2sync):
        state = states.get(program, f"not under {manager}")
        if state != RUNNING[manager]:
            pending = pending or _starting(state)
            problems.append(f"{program} is {state}; last log lines: {seen['logs'][program]}")
    return problems, pending


def serving_problems(
    comfyui: list[dict[str, Any]],
    r2sync: bool,
    log_dir: str,
    timeout: float,
    supervisor_socket: str = SUPERVISOR_SOCKET,
    init: str | None = None,
) -> list[str]:
    """What keeps the pod from serving (``judge``), asked again every half second while some
    of it may still pass, for up to ``timeout`` seconds (0: as things are now)."""
    deadline = time.monotonic() + timeout
    while True:
        seen = observe(comfyui, r2sync, log_dir, supervisor_socket, init)
        problems, pending = judge(seen, comfyui, r2sync)
        if not pending or time.monotonic() > deadline:
            return problems
        time.sleep(0.5)


def serving_line(ports: list[int], r2sync: str | None) -> str:
    """What a pod that serves says: ``r2sync`` is how far it was checked ("runs", "works")."""
    answers = ", ".join(str(port) for port in ports) or "none"
    return f"verify: ComfyUI answers on {answers}" + (f"; r2sync {r2sync}" if r2sync else "")


def verify(
    plan: dict[str, Any],
    venv: Path,
    log_dir: Path,
    r2_env: Path | None,
    timeout: float,
    quick: bool = False,
    smoke: Path | None = None,
    workflows: tuple[Path, Path, Path] | None = None,
    login: Path | None = None,
    venv_wanted: Path | None = None,
) -> list[str]:
    """What keeps the pod from serving its plan (nothing: it serves).

    ``quick``: only what can change while no deploy changes anything (ComfyUI answers with
    the plan's flags, supervisor keeps the programs RUNNING); the S3 round trip, torch's
    view of the GPUs and the node packs were checked by the run that last changed the pod.
    ``smoke``: ComfyUI's output dir: each instance also runs the smoke workflow into it.
    ``workflows``: (stamp, ComfyUI dir, models dir) of the workflows podforge installed, whose
    node types ComfyUI must serve and whose model files must be there. ``login``: the
    credentials file of the login in front of each instance, checked from outside.
    ``venv_wanted``: name -> version of what the venv holds once synced (the deploy's).
    """
    # The S3 round trip first: credentials R2 refuses would keep r2sync restarting until
    # supervisor gives up (a minute); waiting for that says nothing the test has not said.
    r2sync_refused = _r2sync_test(r2_env) if r2_env is not None and not quick else []
    waits_for_r2sync = r2_env is not None and not r2sync_refused
    problems = serving_problems(plan["comfyui"], waits_for_r2sync, str(log_dir), timeout)
    if not problems and not quick:
        for instance in plan["comfyui"]:
            served, found = served_problems(instance, log_dir, smoke)
            problems += found
            if workflows is not None and served:
                problems += fitted_workflows_problems(*workflows, served)
                workflows = None  # every instance runs the same ComfyUI and nodes
            if login is not None:
                problems += login_problems(instance, login)
    problems += r2sync_refused
    if venv_wanted is not None:
        problems += venv_problems(venv_wanted, venv_distributions(str(venv)) or {})
    if plan["gpus"] and not quick:
        problems += gpus_compute(plan, venv)
    if not quick:
        problems += imports_problems(plan["python_stack"].get("imports", []), venv)
    return problems


# Run by the venv's python: each module a feature needs, imported; what failed and why.
IMPORT_PROBE = """
import importlib, json, sys
failed = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception as error:
        failed[name] = f"{type(error).__name__}: {error}".splitlines()[0]
print(json.dumps(failed))
"""


def imports_problems(modules: list[str], venv: Path) -> list[str]:
    """Each module the plan's feature needs (mmcv.ops: the wheelhouse's build) imports in
    the venv; each that does not is named with its error."""
    if not modules:
        return []
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c", IMPORT_PROBE, *modules],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        cause = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        return [f"the venv's python cannot check {', '.join(modules)}: {cause}"]
    failed: dict[str, str] = json.loads(probe.stdout)
    if not failed:
        print(f"verify: {', '.join(modules)} import in {venv}", flush=True)
    return [f"{name} does not import in {venv}: {why}" for name, why in failed.items()]


def _r2sync_test(r2_env: Path) -> list[str]:
    """`r2sync --test` (a round trip to the bucket with the pod's settings, by the tools
    r2sync runs from: this process's venv): its failure."""
    test = subprocess.run(
        [sys.executable, "-m", "podforge", "r2sync", "--test"],
        capture_output=True,
        text=True,
        env={**os.environ, "R2_ENV_FILE": str(r2_env)},
    )
    if test.returncode == 0:
        return []
    cause = (test.stderr.strip().splitlines() or ["no output"])[-1]
    return [f"r2sync --test failed: {cause.split('FAILED: ', 1)[-1]}"]


def served_problems(
    instance: dict[str, Any], log_dir: Path, smoke: Path | None
) -> tuple[set[str], list[str]]:
    """(the node types it serves, what is wrong) of one ComfyUI instance, answering already:
    every pack loaded, every node type described, and with ``smoke`` (the output dir) a
    workflow run whose files are there."""
    program = f"comfyui-{instance['device']}"
    client = ComfyClient(comfyui_address(instance), comfyui_port(instance))
    try:
        # Asked first: a node type that cannot describe itself is logged only then.
        served = set(client.get("/object_info"))
    except (OSError, ValueError) as error:
        return set(), [f"{program}: GET /object_info failed: {error}"]
    log = log_dir / f"{program}.log"
    problems = node_problems(log.read_text(errors="replace") if log.exists() else "", str(log))
    print(f"verify: {program} serves {len(served)} node types", flush=True)
    if smoke is None:
        return served, problems
    began = time.monotonic()
    try:
        failed, outputs = client.run(smoke_prompt(served), timeout=120)
    except (OSError, ValueError, KeyError) as error:
        return served, [*problems, f"{program}: the smoke workflow was not queued: {error}"]
    if failed:
        return served, [*problems, f"{program}: the smoke workflow failed: {failed} (see {log})"]
    missing = [path for path in outputs if not (smoke / path).is_file()]
    if not outputs or missing:
        return served, [*problems, f"{program}: the smoke workflow's files are not in {smoke}"]
    seconds = time.monotonic() - began
    print(f"verify: {program} ran the smoke workflow in {seconds:.1f} s: {', '.join(outputs)}")
    return served, problems


def login_problems(instance: dict[str, Any], credentials: Path) -> list[str]:
    """The login in front of the instance: its public port refuses a request without the
    credentials (401) and serves one with them (the password, and the API token)."""
    login = Credentials.parse(credentials.read_text())
    host = "127.0.0.1" if instance["listen"] in ("0.0.0.0", "::") else instance["listen"]
    where = f"nginx on {host}:{instance['port']}"
    basic = base64.b64encode(f"{login.user}:{login.password}".encode()).decode()
    asked = {
        "without credentials": ({}, 401),
        "with the password": ({"Authorization": f"Basic {basic}"}, 200),
        "with the API token": ({"Authorization": f"Bearer {login.token}"}, 200),
    }
    problems = []
    for what, (headers, wanted) in asked.items():
        connection = http.client.HTTPConnection(host, instance["port"], timeout=10)
        try:
            connection.request("GET", "/system_stats", headers=headers)
            status = connection.getresponse().status
        except (OSError, http.client.HTTPException) as error:
            problems.append(f"{where}: GET /system_stats {what} failed: {error}")
            continue
        finally:
            connection.close()
        if status != wanted:
            problems.append(f"{where}: GET /system_stats {what} answered {status}, not {wanted}")
    if not problems:
        print(f"verify: {where} asks for the login (401 without it) and passes it on", flush=True)
    return problems


def venv_problems(wanted_file: Path, installed: dict[str, str]) -> list[str]:
    """How the venv differs from what the deploy synced into it (a package removed or moved
    by hand imports fine until ComfyUI's next start)."""
    differences = drift(json.loads(wanted_file.read_text()), installed)
    if not differences:
        return []
    shown = ", ".join(differences[:6]) + (", ..." if len(differences) > 6 else "")
    return [
        f"the venv differs from its lock ({len(differences)}: {shown}): deploy again, which"
        " syncs it back"
    ]


# Run by the venv's python on one device (CUDA_VISIBLE_DEVICES names it): what torch was
# built for, what the device is, and whether a real kernel runs on it. An error is the
# answer here, so it is caught and reported, never swallowed.
GPU_PROBE = """
import json, torch
seen = {"torch": torch.__version__, "cuda": torch.version.cuda}
seen["devices"] = torch.cuda.device_count() if torch.cuda.is_available() else 0
if seen["devices"]:
    major, minor = torch.cuda.get_device_capability(0)
    seen.update(
        name=torch.cuda.get_device_name(0),
        capability=f"{major}.{minor}",
        arches=torch.cuda.get_arch_list(),
    )
    try:
        a = torch.full((256, 256), 0.5, device="cuda:0", dtype=torch.float16)
        b = torch.relu(a @ a - 1.0)
        torch.cuda.synchronize(0)
        seen["kernel"] = "ok" if float(b[0, 0]) == 63.0 else f"matmul gave {float(b[0, 0])}"
    except Exception as error:
        seen["kernel"] = (str(error).strip().splitlines() or [type(error).__name__])[0]
print(json.dumps(seen))
"""


def gpus_compute(plan: dict[str, Any], venv: Path) -> list[str]:
    """Each ComfyUI instance's device runs a kernel under the venv's torch (the instances
    that run `--cpu` are skipped, and said so)."""
    on_cpu = [i for i in plan["comfyui"] if "--cpu" in i["args"]]
    if on_cpu:
        names = ", ".join(f"comfyui-{i['device']}" for i in on_cpu)
        print(f"verify: the GPU check is skipped for {names}: ComfyUI runs --cpu", flush=True)
    instances = [i for i in plan["comfyui"] if "--cpu" not in i["args"]]
    running = [
        subprocess.Popen(
            [str(venv / "bin" / "python"), "-c", GPU_PROBE],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "CUDA_VISIBLE_DEVICES": instance["cuda_visible_devices"] or ""},
        )
        for instance in instances
    ]
    devices = {gpu["index"]: gpu for gpu in plan["gpus"]}
    problems = []
    for instance, process in zip(instances, running, strict=True):
        out, err = process.communicate()
        program = f"comfyui-{instance['device']}"
        device = devices[instance["device"]]
        if process.returncode != 0:
            cause = (err.strip().splitlines() or ["no output"])[-1]
            problems.append(f"{program}: torch does not import in {venv}: {cause}")
            continue
        seen = json.loads(out)
        problem = gpu_problem(device, seen, plan["stack"])
        if problem:
            problems.append(f"{program}: {problem}")
        else:
            print(
                f"verify: {program} computes on {seen['name']} ({sm(seen['capability'])}):"
                f" torch {seen['torch']}, an fp16 matmul ran",
                flush=True,
            )
    return problems


def gpu_problem(device: dict[str, Any], seen: dict[str, Any], stack: str) -> str | None:
    """Why a device does not compute under the venv's torch (``seen``: GPU_PROBE's answer
    there), naming the device, its architecture, the torch build and the stack that would
    run; None when it computes."""
    if not seen["devices"]:
        return (
            f"torch {seen['torch']} sees no CUDA device for {device['name']}"
            " (the driver, the container's GPU access, or a CPU build of torch)"
        )
    arch = sm(seen["capability"])
    build = f"torch {seen['torch']} (CUDA {seen['cuda']}, the {stack} stack)"
    would = next(
        (p.name for p in STACK_PROFILES.values() if arch_runs(p.architectures, seen["capability"])),
        None,
    )
    instead = f"{would} would run: deploy with STACK_PROFILE=auto" if would else "no stack runs it"
    if not arch_runs(seen["arches"], seen["capability"]):
        return (
            f"{seen['name']} ({arch}) has no kernels in {build}, which carries"
            f" {' '.join(seen['arches']) or 'no architecture'}; {instead}"
        )
    if seen["kernel"] != "ok":
        return f"a test kernel failed on {seen['name']} ({arch}) under {build}: {seen['kernel']}"
    return None


def fitted_workflows_problems(
    stamp: Path, comfyui_dir: Path, models_dir: Path, served: set[str]
) -> list[str]:
    """The workflows podforge installed (the fitted ones its stamp lists, the user's own
    the deploy lists beside it), checked against the node types ComfyUI serves and the model
    files there (their lines printed)."""
    installed = [Path(p) for p in json.loads(stamp.read_text())["files"]] if stamp.exists() else []
    listed = Path(user_workflows_list(str(stamp.parent)))
    if listed.exists():
        installed += [Path(p) for p in json.loads(listed.read_text())]
    if not installed or check_workflows(installed, comfyui_dir, models_dir, served):
        return []
    return ["workflows: an installed workflow misses a model file or node type (MISSING above)"]


def main(
    plan_file: str,
    venv: str,
    log_dir: str,
    r2_env: str | None,
    timeout: float,
    quick: bool,
    workflows: tuple[str, str, str] | None = None,
    smoke: str | None = None,
    login: str | None = None,
    venv_wanted: str | None = None,
) -> int:
    """``workflows``: (stamp, ComfyUI dir, models dir), checked unless ``quick``; ``smoke``:
    ComfyUI's output dir, where the smoke workflow's files must land."""
    plan = json.loads(Path(plan_file).read_text())
    r2 = Path(r2_env) if r2_env else None
    problems = verify(
        plan,
        Path(venv),
        Path(log_dir),
        r2,
        timeout,
        quick=quick,
        smoke=Path(smoke) if smoke else None,
        workflows=tuple(Path(p) for p in workflows) if workflows else None,  # type: ignore[arg-type]
        login=Path(login) if login else None,
        venv_wanted=Path(venv_wanted) if venv_wanted else None,
    )
    for problem in problems:
        print(f"verify: FAILED {problem}", flush=True)
    if problems:
        return 1
    r2sync = ("runs" if quick else "works") if r2_env else None
    print(serving_line([instance["port"] for instance in plan["comfyui"]], r2sync))
    return 0
