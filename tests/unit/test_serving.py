"""podforge/probe/serving.py (what the pod shows) and verify's judge of it against real servers: a
supervisord (PyPI's, as Debian's 4.2 on the pods) asked over its XML-RPC socket, and an HTTP
server answering like ComfyUI's /system_stats. systemd cannot run as PID 1 here: on that side
a stand-in systemctl replays what the real one prints, and this machine's real systemctl gives
the "not booted" failure. The judge alone is checked with plain tables."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import free_port, start_listening
from podforge.core import services
from podforge.pod.verify import judge, serving_problems
from podforge.probe.serving import (
    LOG_TAIL_BYTES,
    SYSTEMD_UNIT,
    get,
    init_system,
    log_tail,
    observe,
    program_states,
    unit_states,
)

BIN = Path(sys.executable).parent
LISTEN = "127.0.0.1"


def comfyui_standin(root: Path, port: int, argv_port: int | None = None) -> str:
    """The command of an HTTP server whose /system_stats says it runs with --port argv_port."""
    stats = {"system": {"argv": ["main.py", "--listen", LISTEN, "--port", str(argv_port or port)]}}
    root.mkdir(exist_ok=True)
    (root / "system_stats").write_text(json.dumps(stats))
    return f"{sys.executable} -m http.server {port} --bind {LISTEN} --directory {root}"


def instance(port: int) -> dict:
    return {"device": 0, "port": port, "args": ["--listen", LISTEN, "--port", str(port)]}


def supervisord_conf(tmp_path: Path, server: str = "", rest: str = "") -> tuple[Path, Path]:
    """(socket, config) of a supervisord in tmp_path; ``server``: more [unix_http_server]
    lines; ``rest``: more sections."""
    sock, conf = tmp_path / "supervisor.sock", tmp_path / "supervisord.conf"
    conf.write_text(
        f"""[unix_http_server]
file={sock}
{server}
[supervisord]
nodaemon=true
logfile={tmp_path}/supervisord.log
pidfile={tmp_path}/supervisord.pid
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=unix://{sock}
{rest}"""
    )
    return sock, conf


@pytest.fixture
def supervisor(tmp_path):
    """supervisord with comfyui-0 (an HTTP stand-in), r2sync (sleeps) and a program that
    exits at once (FATAL); yields (socket path, supervisorctl argv, ComfyUI's port, logs)."""
    port, logs = free_port(), tmp_path / "logs"
    logs.mkdir()
    sock, conf = supervisord_conf(
        tmp_path,
        rest=f"""[program:comfyui-0]
command={comfyui_standin(tmp_path / "www", port)}
startsecs=1
stdout_logfile={logs}/comfyui-0.log
redirect_stderr=true
[program:r2sync]
command=sleep 600
startsecs=1
stdout_logfile={logs}/r2sync.log
[program:quitter]
command=false
startsecs=1
startretries=0
autorestart=false
""",
    )
    daemon = subprocess.Popen([BIN / "supervisord", "-c", conf])
    control = [BIN / "supervisorctl", "-c", conf]
    try:
        deadline = time.monotonic() + 30
        while program_states(str(sock)) != {
            "comfyui-0": "RUNNING",
            "r2sync": "RUNNING",
            "quitter": "FATAL",
        }:
            assert time.monotonic() < deadline, program_states(str(sock))
            time.sleep(0.2)
        yield str(sock), control, port, logs
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)


def test_program_states_are_supervisorctls(supervisor):
    sock, control, _, _ = supervisor
    status = subprocess.run([*control, "status"], capture_output=True, text=True).stdout
    said = dict(line.split()[:2] for line in status.splitlines())
    assert (
        program_states(sock)
        == said
        == {
            "comfyui-0": "RUNNING",
            "r2sync": "RUNNING",
            "quitter": "FATAL",
        }
    )


def test_no_supervisord_means_no_program_under_it(tmp_path):
    assert program_states(str(tmp_path / "none.sock")) == {}


def test_a_serving_pod_has_no_problem_and_a_stopped_program_is_named(supervisor):
    sock, control, port, logs = supervisor

    def problems() -> list[str]:
        return serving_problems([instance(port)], True, str(logs), 0, supervisor_socket=sock)

    assert problems() == []
    seen = observe([instance(port)], True, str(logs), supervisor_socket=sock)
    assert seen["states"] == {"comfyui-0": "RUNNING", "r2sync": "RUNNING", "quitter": "FATAL"}
    (answer,) = seen["answers"]
    assert json.loads(answer["body"])["system"]["argv"][1:] == instance(port)["args"]
    assert set(seen["logs"]) == {"comfyui-0", "r2sync"}
    subprocess.run([*control, "stop", "r2sync"], check=True, capture_output=True)
    (problem,) = problems()
    assert problem.startswith("r2sync is STOPPED; last log lines: ")
    subprocess.run([*control, "stop", "comfyui-0"], check=True, capture_output=True)
    comfyui, _ = problems()
    assert comfyui.startswith(f"comfyui-0 (port {port}, STOPPED): GET /system_stats failed: ")
    assert "last log lines: " in comfyui and "(no log at" not in comfyui


def test_comfyui_answers_with_the_plans_flags_or_is_named(tmp_path):
    port, other = free_port(), free_port()
    nowhere = str(tmp_path / "no-supervisor.sock")

    def problems() -> list[str]:
        return serving_problems([instance(port)], False, str(tmp_path), 0, nowhere)

    server = start_listening(comfyui_standin(tmp_path / "www", port, argv_port=other).split(), port)
    try:
        assert json.loads(get(LISTEN, port, "/system_stats"))["system"]["argv"][-1] == str(other)
        assert problems() == [
            f"comfyui-0 (port {port}, not under supervisor): runs with"
            f" '--listen {LISTEN} --port {other}', the plan says '--listen {LISTEN} --port {port}';"
            f" last log lines: (no log at {tmp_path}/comfyui-0.log)"
        ]
        with pytest.raises(OSError, match="404"):
            get(LISTEN, port, "/nothing")
    finally:
        server.kill()
        server.wait()
    (problem,) = problems()
    assert problem.startswith(
        f"comfyui-0 (port {port}, not under supervisor): GET /system_stats failed: "
    )


def test_a_comfyui_still_loading_is_waited_for(tmp_path):
    # It answers 2 s after the check starts: a timeout waits for it, none judges it now.
    port = free_port()
    nowhere = str(tmp_path / "no-supervisor.sock")
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "system_stats").write_text(
        json.dumps({"system": {"argv": ["main.py", "--listen", LISTEN, "--port", str(port)]}})
    )
    late = subprocess.Popen(
        ["sh", "-c", f"sleep 2; exec {comfyui_standin(tmp_path / 'www', port)}"]
    )
    try:
        assert serving_problems([instance(port)], False, str(tmp_path), 0, nowhere) != []
        assert serving_problems([instance(port)], False, str(tmp_path), 30, nowhere) == []
    finally:
        late.kill()
        late.wait()


STATS = json.dumps({"system": {"argv": ["main.py", "--port", "8188"], "python_version": "3.11"}})
LOGS = {"comfyui-0": "loaded", "r2sync": "synced"}


@pytest.mark.parametrize(
    ("states", "answer", "r2sync", "problems", "pending"),
    [
        # Serves.
        ({"comfyui-0": "RUNNING", "r2sync": "RUNNING"}, {"body": STATS}, True, [], False),
        # Not under supervisor at all (started by hand): its answer is what counts.
        ({}, {"body": STATS}, False, [], False),
        # Loading: not answering yet, or answering before startsecs.
        (
            {"comfyui-0": "STARTING"},
            {"error": "[Errno 111] Connection refused"},
            False,
            [
                "comfyui-0 (port 8188, STARTING): GET /system_stats failed:"
                " [Errno 111] Connection refused; last log lines: loaded"
            ],
            True,
        ),
        (
            {"comfyui-0": "STARTING"},
            {"body": STATS},
            False,
            [
                "comfyui-0 (port 8188, STARTING): supervisor reports STARTING;"
                " last log lines: loaded"
            ],
            True,
        ),
        # Other flags than the plan's: final.
        (
            {"comfyui-0": "RUNNING"},
            {"body": STATS.replace("8188", "8189")},
            False,
            [
                "comfyui-0 (port 8188, RUNNING): runs with '--port 8189', the plan says"
                " '--port 8188'; last log lines: loaded"
            ],
            False,
        ),
        # An answer that is not ComfyUI's.
        (
            {"comfyui-0": "RUNNING"},
            {"body": "<html>"},
            False,
            [
                "comfyui-0 (port 8188, RUNNING): GET /system_stats failed: Expecting value:"
                " line 1 column 1 (char 0); last log lines: loaded"
            ],
            True,
        ),
        # r2sync: given up (final), restarting (may pass), absent.
        (
            {"comfyui-0": "RUNNING", "r2sync": "FATAL"},
            {"body": STATS},
            True,
            ["r2sync is FATAL; last log lines: synced"],
            False,
        ),
        (
            {"comfyui-0": "RUNNING", "r2sync": "BACKOFF"},
            {"body": STATS},
            True,
            ["r2sync is BACKOFF; last log lines: synced"],
            True,
        ),
        (
            {"comfyui-0": "RUNNING"},
            {"body": STATS},
            True,
            ["r2sync is not under supervisor; last log lines: synced"],
            False,
        ),
    ],
)
def test_judge_reads_what_observe_saw(states, answer, r2sync, problems, pending):
    seen = {"manager": "supervisor", "where": "supervisord at /s", "states": states}
    seen |= {"answers": [answer], "logs": LOGS}
    plan = [{"device": 0, "port": 8188, "args": ["--port", "8188"]}]
    assert judge(seen, plan, r2sync) == (problems, pending)


def test_judge_of_a_manager_that_does_not_answer_and_of_systemd():
    seen = {"manager": "systemd", "where": "systemctl", "answers": [], "logs": LOGS}
    assert judge({**seen, "states": "systemctl show failed: 1"}, [], True) == (
        ["systemctl does not answer: systemctl show failed: 1"],
        False,
    )
    assert judge({**seen, "states": {"r2sync": "active/running"}}, [], True) == ([], False)
    assert judge({**seen, "states": {"r2sync": "activating/auto-restart"}}, [], True) == (
        ["r2sync is activating/auto-restart; last log lines: synced"],
        True,
    )


def test_behind_a_login_nginx_must_run_too():
    seen = {"manager": "supervisor", "where": "supervisord at /s", "logs": {**LOGS, "nginx": ""}}
    seen["answers"] = [{"body": STATS}]
    # Behind the login: ComfyUI on its private port (the plan's args), nginx on 8188.
    plan = [{"device": 0, "port": 8188, "private_port": 18188, "args": ["--port", "8188"]}]
    running = {"comfyui-0": "RUNNING", "nginx": "RUNNING"}
    assert judge({**seen, "states": running}, plan, False) == ([], False)
    assert judge({**seen, "states": {**running, "nginx": "FATAL"}}, plan, False) == (
        ["nginx is FATAL; last log lines: "],
        False,
    )


def test_log_tail_reads_the_end_of_a_big_log(tmp_path):
    log = tmp_path / "comfyui-0.log"
    log.write_text("x" * (3 * LOG_TAIL_BYTES) + "\n" + "".join(f"line {i}\n" for i in range(9)))
    assert log_tail(str(tmp_path), "comfyui-0") == "line 4 | line 5 | line 6 | line 7 | line 8"
    log.write_text("y" * (2 * LOG_TAIL_BYTES))  # one line, longer than the tail read
    assert log_tail(str(tmp_path), "comfyui-0") == "(log empty)"
    log.write_text("")
    assert log_tail(str(tmp_path), "comfyui-0") == "(log empty)"
    assert log_tail(str(tmp_path), "r2sync") == f"(no log at {tmp_path}/r2sync.log)"


def test_a_supervisord_that_refuses_the_call_is_named_not_taken_for_none(tmp_path):
    sock, conf = supervisord_conf(tmp_path, server="username=admin\npassword=secret")
    daemon = subprocess.Popen([BIN / "supervisord", "-c", conf])
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        with pytest.raises(OSError, match="401 Unauthorized"):
            program_states(str(sock))
        assert serving_problems([], True, str(tmp_path), 0, supervisor_socket=str(sock)) == [
            f"supervisord at {sock} does not answer: its answer is not XML-RPC:"
            " <ProtocolError for localhost/RPC2: 401 Unauthorized>"
        ]
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)


# `systemctl show --property=Id,LoadState,ActiveState,SubState -- <units>` as systemd prints
# it: one block per unit in the order asked, properties in systemd's own order, blank lines
# between; a unit it has no file for is LoadState=not-found, inactive/dead.
def unit_block(unit: str, load: str, active: str, sub: str) -> str:
    return f"Id={unit}\nLoadState={load}\nActiveState={active}\nSubState={sub}\n"


class FakeSystemctl:
    """A systemctl first on PATH: it prints the blocks ``show`` last set, for the units it
    is asked about, and records its arguments."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        bindir, self.record, self.shown = tmp_path / "bin", tmp_path / "args", tmp_path / "units"
        bindir.mkdir()
        script = bindir / "systemctl"
        script.write_text(
            f"""#!{sys.executable}
import json, sys
open({str(self.record)!r}, "w").write(json.dumps(sys.argv[1:]))
blocks = json.load(open({str(self.shown)!r}))
units = sys.argv[sys.argv.index("--") + 1:]
print("\\n".join(blocks[unit] for unit in units), end="")
"""
        )
        script.chmod(0o755)
        monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")

    def show(self, **units: tuple[str, str, str]) -> None:
        """Each program's unit as (LoadState, ActiveState, SubState) from now on; the
        programs not named have no unit (not-found)."""
        programs = ["comfyui-0", "comfyui-1", "r2sync"]
        blocks = {
            SYSTEMD_UNIT.format(p): unit_block(
                SYSTEMD_UNIT.format(p), *units.get(p, ("not-found", "inactive", "dead"))
            )
            for p in programs
        }
        self.shown.write_text(json.dumps(blocks))


def test_units_are_named_as_services_writes_them():
    assert SYSTEMD_UNIT.format("r2sync") == f"{services.PREFIX}r2sync.service"


def test_unit_states_read_systemctl_show(tmp_path, monkeypatch):
    systemctl = FakeSystemctl(tmp_path, monkeypatch)
    systemctl.show(
        **{
            "comfyui-0": ("loaded", "active", "running"),
            "r2sync": ("loaded", "activating", "auto-restart"),
        }
    )
    states = unit_states(["comfyui-0", "r2sync", "comfyui-1"])
    assert states == {"comfyui-0": "active/running", "r2sync": "activating/auto-restart"}
    assert json.loads(systemctl.record.read_text()) == [
        "show",
        "--property=Id,LoadState,ActiveState,SubState",
        "--",
        "podforge-comfyui-0.service",
        "podforge-r2sync.service",
        "podforge-comfyui-1.service",
    ]


def test_a_systemd_host_serves_when_its_units_run(tmp_path, monkeypatch):
    port, logs = free_port(), tmp_path / "logs"
    logs.mkdir()
    (logs / "r2sync.log").write_text("podforge r2sync: bad credentials\n")
    systemctl = FakeSystemctl(tmp_path, monkeypatch)
    running = ("loaded", "active", "running")
    server = start_listening(comfyui_standin(tmp_path / "www", port).split(), port)
    try:

        def problems() -> list[str]:
            return serving_problems([instance(port)], True, str(logs), 0, init="systemd")

        systemctl.show(**{"comfyui-0": running, "r2sync": running})
        assert problems() == []
        systemctl.show(**{"comfyui-0": running, "r2sync": ("loaded", "failed", "failed")})
        assert problems() == [
            "r2sync is failed/failed; last log lines: podforge r2sync: bad credentials"
        ]
        systemctl.show(**{"comfyui-0": running})
        assert problems() == [
            "r2sync is not under systemd; last log lines: podforge r2sync: bad credentials"
        ]
        systemctl.show(**{"comfyui-0": ("loaded", "activating", "auto-restart"), "r2sync": running})
        (problem,) = problems()
        assert problem.startswith(
            f"comfyui-0 (port {port}, activating/auto-restart): systemd reports "
            "activating/auto-restart; last log lines: (no log at"
        )
    finally:
        server.kill()
        server.wait()


def test_systemctl_that_cannot_answer_is_named(tmp_path):
    # This machine's own systemctl: PID 1 here is not systemd, so it fails as on a broken host.
    assert shutil.which("systemctl"), "bin/setup installs Debian's systemd"
    (problem,) = serving_problems([], True, str(tmp_path), 0, init="systemd")
    assert problem.startswith("systemctl does not answer: systemctl show failed: ")
    assert "System has not been booted with systemd" in problem


def test_init_system_is_pid_1s(tmp_path):
    comm = tmp_path / "comm"
    comm.write_text("systemd\n")
    assert init_system(str(comm)) == "systemd"
    comm.write_text("tini\n")
    assert init_system(str(comm)) == "supervisor"
