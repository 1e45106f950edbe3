"""What the pod shows of its serving: ComfyUI's answer, the programs' states from supervisord
(XML-RPC over its Unix socket) or, on a systemd host, from systemctl, and their last log
lines. It reads and does not judge: `podforge verify` judges (verify.judge), on the pod, and
so does the deploy, on the controller, of what the pod-state probe read.

Standard library only and self-contained: the pod-state fact (facts/pod.py) runs this source
with the pod's system python3 on every deploy.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import xmlrpc.client
from typing import Any, TypedDict

# Debian's supervisord.conf ([unix_http_server] file=), which podforge's programs join.
SUPERVISOR_SOCKET = "/var/run/supervisor.sock"
# How podforge/core/services.py names a program's unit on a systemd host (services.PREFIX).
SYSTEMD_UNIT = "podforge-{}.service"
LOG_LINES = 5
# The end of a log that its last lines are read from: a long-running ComfyUI's log is big.
LOG_TAIL_BYTES = 16384


def get(host: str, port: int, path: str, timeout: float = 3.0) -> str:
    """The body of GET http://host:port/path; OSError when that fails (not 200 included)."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        body = answer.read()
    except http.client.HTTPException as error:
        raise OSError(f"no HTTP answer: {error!r}") from None
    finally:
        connection.close()
    if answer.status != 200:
        raise OSError(f"answered {answer.status} {answer.reason}")
    return body.decode("utf-8", "replace")


class _UnixConnection(http.client.HTTPConnection):
    """HTTP to a Unix socket (supervisord's), for xmlrpc.client."""

    def __init__(self, socket_path: str) -> None:
        super().__init__("localhost", timeout=5)
        self.socket_path = socket_path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, socket_path: str) -> None:
        super().__init__()
        self.socket_path = socket_path

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        return _UnixConnection(self.socket_path)


def program_states(socket_path: str = SUPERVISOR_SOCKET) -> dict[str, str]:
    """program -> state, as supervisorctl names them, asked of supervisord's XML-RPC socket.
    Empty when no supervisord listens there (systemd pods, or supervisord is down): then no
    program is under supervisor, which verify.judge reports for r2sync. OSError when
    one listens and does not answer as supervisord does."""
    server = xmlrpc.client.ServerProxy("http://localhost", transport=_UnixTransport(socket_path))
    try:
        infos = server.supervisor.getAllProcessInfo()
    except (FileNotFoundError, ConnectionRefusedError):
        return {}
    except xmlrpc.client.Fault as fault:
        raise OSError(f"it refused getAllProcessInfo: {fault.faultString}") from None
    except (xmlrpc.client.ProtocolError, xmlrpc.client.ResponseError) as error:
        raise OSError(f"its answer is not XML-RPC: {error}") from None
    states = {}
    for info in infos:
        name = info["name"] if info["group"] == info["name"] else f"{info['group']}:{info['name']}"
        states[name] = info["statename"]
    return states


def log_tail(log_dir: str, program: str, lines: int = LOG_LINES) -> str:
    log = os.path.join(log_dir, f"{program}.log")
    try:
        with open(log, "rb") as text:
            start = max(0, text.seek(0, os.SEEK_END) - LOG_TAIL_BYTES)
            text.seek(start)
            read = text.read().decode("utf-8", "replace").splitlines()
    except FileNotFoundError:
        return f"(no log at {log})"
    tail = read[1:][-lines:] if start else read[-lines:]  # from mid-file: its first is partial
    return " | ".join(line.strip() for line in tail) or "(log empty)"


def comfyui_address(instance: dict[str, Any]) -> str:
    """Where the instance (a plan's ``comfyui`` entry) is asked: its --listen address, or
    127.0.0.1 when it listens on all of them."""
    listen = instance["args"][instance["args"].index("--listen") + 1]
    return "127.0.0.1" if listen in ("0.0.0.0", "::") else listen.split(",")[0]


def companions(comfyui: list[dict[str, Any]], r2sync: bool) -> list[str]:
    """The programs beside ComfyUI the pod runs: r2sync when on, nginx when a login stands
    in front of ComfyUI (its instances have a private port)."""
    login = any(instance.get("private_port") for instance in comfyui)
    return (["r2sync"] if r2sync else []) + (["nginx"] if login else [])


def comfyui_port(instance: dict[str, Any]) -> int:
    """ComfyUI's own port: behind the login, its private one."""
    return int(instance.get("private_port") or instance["port"])


def init_system(comm: str = "/proc/1/comm") -> str:
    """The host's init, as the host fact reads it: "systemd" runs the programs as units;
    anything else (tini, a shell: containers) leaves them to supervisord."""
    with open(comm) as name:
        return "systemd" if name.read().strip() == "systemd" else "supervisor"


def unit_states(programs: list[str]) -> dict[str, str]:
    """program -> "ActiveState/SubState" of its unit (active/running, activating/auto-restart,
    failed/failed, ...), as ``systemctl show`` reports them; units systemd does not have are
    left out. OSError when systemctl cannot answer."""

    units = {SYSTEMD_UNIT.format(program): program for program in programs}
    shown = subprocess.run(
        ["systemctl", "show", "--property=Id,LoadState,ActiveState,SubState", "--", *units],
        capture_output=True,
        text=True,
    )
    if shown.returncode != 0:
        raise OSError(f"systemctl show failed: {shown.stderr.strip() or shown.returncode}")
    states = {}
    # One block of Key=value lines per unit, blank lines between (properties in systemd's order).
    for block in shown.stdout.strip().split("\n\n"):
        unit = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if unit.get("Id") in units and unit.get("LoadState") != "not-found":
            states[units[unit["Id"]]] = f"{unit['ActiveState']}/{unit['SubState']}"
    return states


class Observed(TypedDict):
    """``observe``'s answer (judged by podforge/pod/verify.py ``judge``)."""

    manager: str  # "supervisor" or "systemd"
    where: str  # what was asked for the states
    states: dict[str, str] | str  # program -> its state, or why they could not be read
    answers: list[dict[str, str]]  # per ComfyUI instance: {"body": ...} or {"error": ...}
    logs: dict[str, str]  # program -> its last log lines


def observe(
    comfyui: list[dict[str, Any]],
    r2sync: bool,
    log_dir: str,
    supervisor_socket: str = SUPERVISOR_SOCKET,
    init: str | None = None,
) -> Observed:
    """What the pod shows now of the programs it should serve, unjudged (verify.judge):
    ``manager``: "supervisor" or "systemd" (``init``; None: as PID 1 says); ``where``: what
    was asked for the states; ``states``: program -> state, or why they could not be read;
    ``answers``: per ComfyUI instance (the plan's ``comfyui`` entries), its /system_stats
    body ({"body": ...}) or why the GET failed ({"error": ...}); ``logs``: program -> its
    last log lines."""
    programs = [f"comfyui-{instance['device']}" for instance in comfyui]
    programs += companions(comfyui, r2sync)
    states: dict[str, str] | str
    if (init or init_system()) == "systemd":
        manager, where = "systemd", "systemctl"
        try:
            states = unit_states(programs)
        except OSError as error:
            states = str(error)
    else:
        manager, where = "supervisor", f"supervisord at {supervisor_socket}"
        try:
            states = program_states(supervisor_socket)
        except OSError as error:
            states = str(error)
    answers = []
    for instance in comfyui:
        try:
            answers.append(
                {"body": get(comfyui_address(instance), comfyui_port(instance), "/system_stats")}
            )
        except OSError as error:
            answers.append({"error": str(error)})
    return {
        "manager": manager,
        "where": where,
        "states": states,
        "answers": answers,
        "logs": {program: log_tail(log_dir, program) for program in programs},
    }
