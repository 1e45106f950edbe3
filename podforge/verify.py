"""`podforge verify`: the pod serves what its plan says (run on the pod; standard library).

- every ComfyUI instance answers ``GET /system_stats`` on its port, with the plan's flags;
- r2sync (when on) is RUNNING under supervisor and its ``--test`` round trip passes;
- on GPU pods, torch in the venv sees CUDA and the plan's number of GPUs;
- each workflow podforge fitted to the pod finds its model files and node types.

Each problem names the program, the port, the cause and the program's last log lines.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
import xmlrpc.client
from collections.abc import Callable
from pathlib import Path
from typing import Any

LOG_LINES = 5


def log_tail(log_dir: Path, program: str, lines: int = LOG_LINES) -> str:
    log = log_dir / f"{program}.log"
    if not log.exists():
        return f"(no log at {log})"
    tail = log.read_text(errors="replace").splitlines()[-lines:]
    return " | ".join(line.strip() for line in tail) or "(log empty)"


def _stats(host: str, port: int) -> dict[str, Any]:
    url = f"http://{host}:{port}/system_stats"
    with urllib.request.urlopen(url, timeout=3) as answer:
        return dict(json.load(answer))


def check_comfyui(
    instance: dict[str, Any], deadline: float, fetch: Callable[[str, int], dict[str, Any]]
) -> str | None:
    """None when the instance answers with the plan's flags before the deadline."""
    listen = instance["args"][instance["args"].index("--listen") + 1]
    host = "127.0.0.1" if listen in ("0.0.0.0", "::") else listen.split(",")[0]
    cause = "no answer"
    while True:
        try:
            argv = fetch(host, instance["port"])["system"]["argv"]
        except (OSError, urllib.error.URLError, ValueError, KeyError) as error:
            cause = f"GET /system_stats failed: {error}"
        else:
            if argv[1:] == instance["args"]:
                return None
            return f"runs with {' '.join(argv[1:])!r}, the plan says {' '.join(instance['args'])!r}"
        if time.monotonic() > deadline:
            return cause
        time.sleep(0.5)


# Debian's supervisord.conf ([unix_http_server] file=), which podforge's programs join.
SUPERVISOR_SOCKET = "/var/run/supervisor.sock"


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=5)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(self.path)


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        return _UnixConnection(self.path)


def program_states(socket_path: str = SUPERVISOR_SOCKET) -> dict[str, str]:
    """program -> state, as supervisorctl names them, asked of supervisord's own XML-RPC
    socket (supervisorctl is a Python program: it would cost a no-op 0.14 s of CPU per pod).
    Empty when no supervisord listens there (systemd pods, or supervisord is down)."""
    proxy = xmlrpc.client.ServerProxy("http://localhost", transport=_UnixTransport(socket_path))
    try:
        infos = proxy.supervisor.getAllProcessInfo()
    except OSError:
        return {}
    return {
        info["name"] if info["group"] == info["name"] else f"{info['group']}:{info['name']}": (
            info["statename"]
        )
        for info in infos
    }


def wait_running(program: str, deadline: float, known: dict[str, str] | None = None) -> str:
    """The program's state once it leaves STARTING/BACKOFF, or at the deadline; ``known``:
    states already read, asked again only while the program is still starting."""
    while True:
        if known is None:
            known = program_states()
        state = known.get(program, "not under supervisor")
        known = None
        if state not in ("STARTING", "BACKOFF") or time.monotonic() > deadline:
            return state
        time.sleep(0.5)


def verify(
    plan: dict[str, Any],
    venv: Path,
    log_dir: Path,
    r2_env: Path | None,
    timeout: float,
    fetch: Callable[[str, int], dict[str, Any]] = _stats,
    quick: bool = False,
) -> list[str]:
    """What keeps the pod from serving its plan (nothing: it serves).

    ``quick``: only what can change while no deploy changes anything (ComfyUI answers with
    the plan's flags, supervisor keeps the programs RUNNING); the S3 round trip and torch's
    view of the GPUs were checked by the run that last changed the pod.
    """
    problems = []
    deadline = time.monotonic() + timeout
    states = program_states()
    for instance in plan["comfyui"]:
        program = f"comfyui-{instance['device']}"
        cause = check_comfyui(instance, deadline, fetch)
        # Under supervisor it must also have stayed up its startsecs (RUNNING, not STARTING).
        state = wait_running(program, deadline, states) if program in states else None
        if cause is None and state not in (None, "RUNNING"):
            cause = f"supervisor reports {state}"
        if cause:
            state = state or "not under supervisor"
            problems.append(
                f"{program} (port {instance['port']}, {state}): {cause}; "
                f"last log lines: {log_tail(log_dir, program)}"
            )
    if r2_env is not None:
        state = wait_running("r2sync", deadline, states)
        if state != "RUNNING":
            problems.append(f"r2sync is {state}; last log lines: {log_tail(log_dir, 'r2sync')}")
    if r2_env is not None and not quick:
        test = subprocess.run(
            [str(venv / "bin" / "podforge"), "r2sync", "--test"],
            capture_output=True,
            text=True,
            env={**os.environ, "R2_ENV_FILE": str(r2_env)},
        )
        if test.returncode != 0:
            cause = (test.stderr.strip().splitlines() or ["no output"])[-1]
            problems.append(f"r2sync --test failed: {cause.split('FAILED: ', 1)[-1]}")
    if plan["gpus"] and not quick:
        problems.extend(_torch_sees(plan, venv))
    return problems


def _torch_sees(plan: dict[str, Any], venv: Path) -> list[str]:
    program = (
        "import json, torch; "
        "print(json.dumps([torch.cuda.is_available(), torch.cuda.device_count()]))"
    )
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", program], capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        return [f"torch does not import: {(done.stderr.strip().splitlines() or ['?'])[-1]}"]
    available, count = json.loads(done.stdout)
    if not available:
        return ["torch does not see CUDA (driver, or a CPU build of torch?)"]
    physical = {gpu["gpu_index"] for gpu in plan["gpus"] if gpu["mig"] is None}
    if physical and count != len(physical) and not any(g["mig"] for g in plan["gpus"]):
        return [f"torch sees {count} GPUs, the plan has {len(physical)}"]
    return []


def fitted_workflows_problems(stamp: Path, comfyui_dir: Path, models_dir: Path) -> list[str]:
    """The workflows the stamp says podforge installed, checked (their lines printed)."""
    from podforge.workflows_cli import check_workflows

    installed = [Path(p) for p in json.loads(stamp.read_text())["files"]] if stamp.exists() else []
    if not installed or check_workflows(installed, comfyui_dir, models_dir):
        return []
    return ["workflows: a fitted workflow misses a model file or node type (MISSING above)"]


def main(
    plan_file: str,
    venv: str,
    log_dir: str,
    r2_env: str | None,
    timeout: float,
    quick: bool,
    workflows: tuple[str, str, str] | None = None,
) -> int:
    """``workflows``: (stamp, ComfyUI dir, models dir), checked unless ``quick``."""
    plan = json.loads(Path(plan_file).read_text())
    r2 = Path(r2_env) if r2_env else None
    problems = verify(plan, Path(venv), Path(log_dir), r2, timeout, quick=quick)
    if workflows is not None and not quick:
        stamp, comfyui_dir, models_dir = (Path(p) for p in workflows)
        problems += fitted_workflows_problems(stamp, comfyui_dir, models_dir)
    for problem in problems:
        print(f"verify: FAILED {problem}", flush=True)
    if problems:
        return 1
    ports = ", ".join(str(i["port"]) for i in plan["comfyui"]) or "none"
    r2sync = ("; r2sync runs" if quick else "; r2sync works") if r2_env else ""
    print(f"verify: ComfyUI answers on {ports}{r2sync}")
    return 0
