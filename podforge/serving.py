"""What the pod shows of its serving: ComfyUI's answer, the programs' states from supervisord
(its XML-RPC socket, asked over plain sockets) or, on a systemd host, from systemctl, and
their last log lines. It reads and does not judge: `podforge verify` judges (verify.judge),
on the pod, and so does the deploy, on the controller, of what the pod-state probe read.

Standard library only and self-contained: the pod-state fact (facts/pod.py) runs this source
with the pod's system python3 on every deploy. CPython's own _socket and expat, not socket,
http.client, xmlrpc.client, ElementTree or json: their imports alone would cost a no-op
~25 ms of CPU per pod; one GET and one XML-RPC call need none of them.
"""

from __future__ import annotations

import _socket
import os
from pyexpat import ExpatError, ParserCreate
from typing import Any

# Debian's supervisord.conf ([unix_http_server] file=), which podforge's programs join.
SUPERVISOR_SOCKET = "/var/run/supervisor.sock"
# How podforge/services.py names a program's unit on a systemd host (services.PREFIX).
SYSTEMD_UNIT = "podforge-{}.service"
LOG_LINES = 5
# The end of a log that its last lines are read from: a long-running ComfyUI's log is big.
LOG_TAIL_BYTES = 16384


def _exchange(family: int, address: Any, request: bytes, timeout: float) -> bytes:
    """An HTTP/1.0 request's response body (the server closes after it); OSError unless 200."""
    # _socket's socket, not socket.socket: socket's import (enum, selectors) costs ~3 ms.
    connection = _socket.socket(family, _socket.SOCK_STREAM)
    try:
        connection.settimeout(timeout)
        connection.connect(address)
        connection.sendall(request)
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    finally:
        connection.close()
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode("latin-1")
    if status.split(" ")[1:2] != ["200"]:
        raise OSError(f"answered {status or 'nothing'!r}")
    return body


def get(host: str, port: int, path: str, timeout: float = 3.0) -> str:
    """The body of GET http://host:port/path; OSError when that fails."""
    # An address, not a name: getaddrinfo() would import the idna codec (with stringprep
    # and unicodedata), ~1 ms of every probe start.
    family = _socket.AF_INET6 if ":" in host else _socket.AF_INET
    request = f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n".encode()
    return _exchange(family, (host, port), request, timeout).decode("utf-8", "replace")


def program_states(socket_path: str = SUPERVISOR_SOCKET) -> dict[str, str]:
    """program -> state, as supervisorctl names them, asked of supervisord's XML-RPC socket.
    Empty when no supervisord listens there (systemd pods, or supervisord is down): then no
    program is under supervisor, which verify.judge reports for r2sync. OSError when
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
        answer = _exchange(_socket.AF_UNIX, socket_path, request, timeout=5)
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


def observe(
    comfyui: list[dict[str, Any]],
    r2sync: bool,
    log_dir: str,
    supervisor_socket: str = SUPERVISOR_SOCKET,
    init: str | None = None,
) -> dict[str, Any]:
    """What the pod shows now of the programs it should serve, unjudged (verify.judge):
    ``manager``: "supervisor" or "systemd" (``init``; None: as PID 1 says); ``where``: what
    was asked for the states; ``states``: program -> state, or why they could not be read;
    ``answers``: per ComfyUI instance (the plan's ``comfyui`` entries), its /system_stats
    body ({"body": ...}) or why the GET failed ({"error": ...}); ``logs``: program -> its
    last log lines."""
    programs = [f"comfyui-{instance['device']}" for instance in comfyui]
    programs += ["r2sync"] if r2sync else []
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
                {"body": get(comfyui_address(instance), instance["port"], "/system_stats")}
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
