"""Does the pod serve: ComfyUI's answer and supervisor's program states, asked over plain
sockets.

Standard library only and self-contained: the pod-state fact (facts/pod.py) runs this source
with the pod's system python3 on every deploy, and `podforge verify` uses it in the venv.
Plain sockets, not http.client / xmlrpc.client: their imports alone cost a no-op ~20 ms of
CPU per pod; one GET and one XML-RPC call need neither.
"""

from __future__ import annotations

import json
import os
import socket
import time
import xml.etree.ElementTree as ElementTree
from typing import Any

# Debian's supervisord.conf ([unix_http_server] file=), which podforge's programs join.
SUPERVISOR_SOCKET = "/var/run/supervisor.sock"
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
    with socket.create_connection((host, port), timeout=timeout) as connection:
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
            answer = ElementTree.fromstring(_exchange(connection, request))
    except (FileNotFoundError, ConnectionRefusedError):
        return {}
    except ElementTree.ParseError as error:
        raise OSError(f"its answer is not XML-RPC: {error}") from None
    if answer.find("fault") is not None:
        raise OSError(f"it refused getAllProcessInfo: {ElementTree.tostring(answer)!r}")
    states = {}
    for struct in answer.iter("struct"):
        info = {}
        for member in struct.iter("member"):
            value = member.find("value")
            info[member.findtext("name")] = "" if value is None else "".join(value.itertext())
        name = info["name"] if info["group"] == info["name"] else f"{info['group']}:{info['name']}"
        states[name] = info["statename"]
    return states


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


def wait_running(
    program: str,
    deadline: float,
    known: dict[str, str] | None,
    socket_path: str = SUPERVISOR_SOCKET,
) -> str:
    """The program's state once it leaves STARTING/BACKOFF, or at the deadline; ``known``:
    states already read, asked again only while the program is still starting."""
    while True:
        if known is None:
            try:
                known = program_states(socket_path)
            except OSError as error:
                return f"unknown (supervisord at {socket_path}: {error})"
        state = known.get(program, "not under supervisor")
        known = None
        if state not in ("STARTING", "BACKOFF") or time.monotonic() > deadline:
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
) -> list[str]:
    """What keeps the pod from serving: each ComfyUI instance (the plan's ``comfyui`` entries)
    answers with its flags and, under supervisor, stays RUNNING; r2sync (when on) is RUNNING.
    ``timeout``: how long a starting program may take (0: as things are now)."""
    problems = []
    deadline = time.monotonic() + timeout
    try:
        states = program_states(supervisor_socket)
    except OSError as error:
        return [f"supervisord at {supervisor_socket} does not answer: {error}"]
    for instance in comfyui:
        program = f"comfyui-{instance['device']}"
        cause = comfyui_problem(instance, deadline)
        # Under supervisor it must also have stayed up its startsecs (RUNNING, not STARTING).
        state = (
            wait_running(program, deadline, states, supervisor_socket)
            if program in states
            else None
        )
        if cause is None and state not in (None, "RUNNING"):
            cause = f"supervisor reports {state}"
        if cause:
            state = state or "not under supervisor"
            problems.append(
                f"{program} (port {instance['port']}, {state}): {cause}; "
                f"last log lines: {log_tail(log_dir, program)}"
            )
    if r2sync:
        state = wait_running("r2sync", deadline, states, supervisor_socket)
        if state != "RUNNING":
            problems.append(f"r2sync is {state}; last log lines: {log_tail(log_dir, 'r2sync')}")
    return problems
