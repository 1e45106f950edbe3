"""Does the pod serve: ComfyUI's answer and the programs' states, from supervisord (its
XML-RPC socket, asked over plain sockets) or, on a systemd host, from systemctl.

Standard library only and self-contained: the pod-state fact (facts/pod.py) runs this source
with the pod's system python3 on every deploy, and `podforge verify` uses it in the venv.
Plain sockets and expat, not http.client / xmlrpc.client / ElementTree: their imports alone
cost a no-op ~20 ms of CPU per pod; one GET and one XML-RPC call need none of them.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from functools import partial
from pyexpat import ExpatError, ParserCreate
from typing import Any

# Debian's supervisord.conf ([unix_http_server] file=), which podforge's programs join.
SUPERVISOR_SOCKET = "/var/run/supervisor.sock"
# How podforge/services.py names a program's unit on a systemd host (services.PREFIX).
SYSTEMD_UNIT = "podforge-{}.service"
LOG_LINES = 5


def _exchange(connection: socket.socket, request: bytes) -> bytes:
    """An HTTP/1.0 request's response body (the server closes after it); OSError unless 200."""
    connection.sendall(request)
    chunks = []
    while chunk := connection.recv(65536):
        chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode("latin-1")
    if status.split(" ")[1:2] != ["200"]:
        raise OSError(f"answered {status or 'nothing'!r}")
    return body


def get_json(host: str, port: int, path: str, timeout: float = 3.0) -> Any:
    """GET http://host:port/path as JSON; OSError or ValueError when that fails."""
    # connect() to the address, not create_connection(): its getaddrinfo() imports the idna
    # codec (with stringprep and unicodedata), ~1 ms of every probe start.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as connection:
        connection.settimeout(timeout)
        connection.connect((host, port))
        request = f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n"
        return json.loads(_exchange(connection, request.encode()))


def program_states(socket_path: str = SUPERVISOR_SOCKET) -> dict[str, str]:
    """program -> state, as supervisorctl names them, asked of supervisord's XML-RPC socket.
    Empty when no supervisord listens there (systemd pods, or supervisord is down): then no
    program is under supervisor, which ``serving_problems`` reports for r2sync. OSError when
    one listens and does not answer as supervisord does."""
    call = (
        b"<?xml version='1.0'?><methodCall><methodName>supervisor.getAllProcessInfo"
        b"</methodName><params></params></methodCall>"
    )
    request = (
        b"POST /RPC2 HTTP/1.0\r\nHost: localhost\r\nContent-Type: text/xml\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(call), call)
    )
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(5)
            connection.connect(socket_path)
            answer = _exchange(connection, request)
    except (FileNotFoundError, ConnectionRefusedError):
        return {}
    try:
        fault, structs = xmlrpc_structs(answer)
    except ExpatError as error:
        raise OSError(f"its answer is not XML-RPC: {error}") from None
    if fault:
        raise OSError(f"it refused getAllProcessInfo: {answer!r}")
    states = {}
    for info in structs:
        name = info["name"] if info["group"] == info["name"] else f"{info['group']}:{info['name']}"
        states[name] = info["statename"]
    return states


def xmlrpc_structs(answer: bytes) -> tuple[bool, list[dict[str, str]]]:
    """(is it a fault, each <struct>'s members as name -> the text of its value) of an
    XML-RPC answer; ExpatError when it is not XML."""
    fault, structs, chars, path = False, [], [], []
    name = ""

    def start(tag: str, _attributes: dict[str, str]) -> None:
        nonlocal fault
        fault = fault or tag == "fault"
        if tag == "struct":
            structs.append({})
        elif tag in ("name", "value"):
            chars.clear()
        path.append(tag)

    def end(tag: str) -> None:
        nonlocal name
        path.pop()
        if tag == "name":
            name = "".join(chars)
        elif tag == "value" and path[-1:] == ["member"]:
            structs[-1][name] = "".join(chars)

    parser = ParserCreate()
    parser.StartElementHandler, parser.EndElementHandler = start, end
    parser.CharacterDataHandler = chars.append
    parser.Parse(answer, True)
    return fault, structs


def log_tail(log_dir: str, program: str, lines: int = LOG_LINES) -> str:
    log = os.path.join(log_dir, f"{program}.log")
    if not os.path.exists(log):
        return f"(no log at {log})"
    with open(log, errors="replace") as text:
        tail = text.read().splitlines()[-lines:]
    return " | ".join(line.strip() for line in tail) or "(log empty)"


def comfyui_problem(instance: dict[str, Any], deadline: float) -> str | None:
    """None when the instance answers with the plan's flags before the deadline."""
    listen = instance["args"][instance["args"].index("--listen") + 1]
    host = "127.0.0.1" if listen in ("0.0.0.0", "::") else listen.split(",")[0]
    while True:
        try:
            argv = get_json(host, instance["port"], "/system_stats")["system"]["argv"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            cause = f"GET /system_stats failed: {error}"
        else:
            if argv[1:] == instance["args"]:
                return None
            return f"runs with {' '.join(argv[1:])!r}, the plan says {' '.join(instance['args'])!r}"
        if time.monotonic() > deadline:
            return cause
        time.sleep(0.5)


def init_system(comm: str = "/proc/1/comm") -> str:
    """The host's init, as the host fact reads it: "systemd" runs the programs as units;
    anything else (tini, a shell: containers) leaves them to supervisord."""
    with open(comm) as name:
        return "systemd" if name.read().strip() == "systemd" else "supervisor"


def unit_states(programs: list[str]) -> dict[str, str]:
    """program -> "ActiveState/SubState" of its unit (active/running, activating/auto-restart,
    failed/failed, ...), as ``systemctl show`` reports them; units systemd does not have are
    left out. OSError when systemctl cannot answer."""
    import subprocess  # only on systemd hosts: the pod-state probe's start stays lighter

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


def _starting(state: str) -> bool:
    """supervisor's STARTING/BACKOFF, systemd's activating (start, auto-restart)."""
    return state in ("STARTING", "BACKOFF") or state.startswith("activating/")


def wait_running(
    program: str,
    deadline: float,
    known: dict[str, str] | None,
    read_states: Callable[[], dict[str, str]],
    manager: str = "supervisor",
) -> str:
    """The program's state once it is no longer starting, or at the deadline; ``known``:
    states already read, asked again (``read_states``) only while the program still starts."""
    while True:
        if known is None:
            try:
                known = read_states()
            except OSError as error:
                return f"unknown ({manager}: {error})"
        state = known.get(program, f"not under {manager}")
        known = None
        if not _starting(state) or time.monotonic() > deadline:
            return state
        time.sleep(0.5)


def serving_line(ports: list[int], r2sync: str | None) -> str:
    """What a pod that serves says: ``r2sync`` is how far it was checked ("runs", "works")."""
    answers = ", ".join(str(port) for port in ports) or "none"
    return f"verify: ComfyUI answers on {answers}" + (f"; r2sync {r2sync}" if r2sync else "")


def serving_problems(
    comfyui: list[dict[str, Any]],
    r2sync: bool,
    log_dir: str,
    timeout: float,
    supervisor_socket: str = SUPERVISOR_SOCKET,
    init: str | None = None,
) -> list[str]:
    """What keeps the pod from serving: each ComfyUI instance (the plan's ``comfyui`` entries)
    answers with its flags and, under its manager, stays running; r2sync (when on) runs.
    ``timeout``: how long a starting program may take (0: as things are now); ``init``:
    "systemd" or "supervisor" (None: as PID 1 says)."""
    programs = [f"comfyui-{instance['device']}" for instance in comfyui]
    programs += ["r2sync"] if r2sync else []
    if (init or init_system()) == "systemd":
        manager, running, where = "systemd", "active/running", "systemctl"
        read_states = partial(unit_states, programs)
    else:
        manager, running = "supervisor", "RUNNING"
        where = f"supervisord at {supervisor_socket}"
        read_states = partial(program_states, supervisor_socket)
    problems = []
    deadline = time.monotonic() + timeout
    try:
        states = read_states()
    except OSError as error:
        return [f"{where} does not answer: {error}"]
    for instance in comfyui:
        program = f"comfyui-{instance['device']}"
        cause = comfyui_problem(instance, deadline)
        # Under its manager it must also have stayed up (RUNNING after startsecs, not STARTING).
        state = (
            wait_running(program, deadline, states, read_states, manager)
            if program in states
            else None
        )
        if cause is None and state not in (None, running):
            cause = f"{manager} reports {state}"
        if cause:
            state = state or f"not under {manager}"
            problems.append(
                f"{program} (port {instance['port']}, {state}): {cause}; "
                f"last log lines: {log_tail(log_dir, program)}"
            )
    if r2sync:
        state = wait_running("r2sync", deadline, states, read_states, manager)
        if state != running:
            problems.append(f"r2sync is {state}; last log lines: {log_tail(log_dir, 'r2sync')}")
    return problems
