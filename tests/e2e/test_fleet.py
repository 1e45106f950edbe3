"""Rollouts across the sandbox's pods: a pod dying mid-run, the report, rerun, the budget."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from paramiko import SSHException

from conftest import free_port, start_listening
from e2e.conftest import control_hub, pod_shell
from fleet.runs import REPORT_PATH, read_report
from sandbox.control import pod_hosts, restart_pod, stop_one_pod

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
ROLLOUT = [sys.executable, "-m", "fleet", "rollout", "inventories/sandbox.py"]


@pytest.fixture
def throttled_hub(sandbox: dict[str, Any]) -> Iterator[None]:
    # 64 KiB sandbox files at 8 KiB/s over plain HTTP (the throttle is on resolve
    # answers): a fetch lasts ~8 s, long enough to kill a pod in the middle of it.
    control_hub(sandbox, "xet", {"enabled": False})
    control_hub(sandbox, "faults", {"throttle_bps": 8192})
    try:
        yield
    finally:
        control_hub(sandbox, "faults", {})
        control_hub(sandbox, "xet", {"enabled": True})


def _start_rollout(log: Path, *args: str) -> subprocess.Popen[bytes]:
    # Output to a file, read as it grows: no pipe to drain from this (gevent-patched) process.
    with log.open("wb") as out:
        return subprocess.Popen([*ROLLOUT, *args], cwd=REPO, stdout=out, stderr=subprocess.STDOUT)


def _drop_one_model(sandbox: dict[str, Any], pod: dict[str, Any]) -> str:
    manifest = json.loads(pod_shell(sandbox, pod, "cat /opt/podforge/manifest.json"))
    dest = manifest[0]["dest"]
    pod_shell(sandbox, pod, f"rm {dest}")
    return dest


def test_a_pod_killed_mid_rollout_fails_alone_is_named_and_reruns_alone(
    sandbox, throttled_hub, tmp_path
):
    pods = sandbox["pods"]
    victim = pods[1]
    dropped = {pod["address"]: _drop_one_model(sandbox, pod) for pod in pods}
    log = tmp_path / "rollout.log"
    rollout = _start_rollout(log)
    # Kill the victim once the fetch op is under way on every pod.
    deadline = time.monotonic() + 300
    while "Starting operation: Models | Fetch" not in log.read_text():
        assert rollout.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    time.sleep(2)
    stop_one_pod(victim["name"])
    try:
        rollout.wait(timeout=600)
        output = log.read_text()
        assert rollout.returncode == 1, output[-3000:]

        runs = {run.host: run for run in read_report(REPO / REPORT_PATH)}
        assert set(runs) == {pod["address"] for pod in pods}
        failed = runs[victim["address"]]
        assert failed.status == "failed" and failed.pod == victim["name"]
        assert failed.cause is not None and failed.cause.startswith("Models | Fetch ")
        assert failed.cause.endswith(": the SSH connection to the pod was lost")
        for pod in (pods[0], pods[2]):
            run = runs[pod["address"]]
            assert run.status == "ok" and run.cause is None, run
            assert run.gb_fetched > 0 and run.changed >= 1 and run.tier and run.variants
            # The others finished: the dropped file is back.
            pod_shell(sandbox, pod, f"test -s {dropped[pod['address']]}")
        # The table was shown, the victim's cause under it.
        assert "--> Per-pod report:" in output and f"    cause: {failed.cause}" in output
    finally:
        restart_pod(victim["name"])

    rerun = subprocess.run(
        [*ROLLOUT, "--limit", "last_failed"], cwd=REPO, capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    runs = read_report(REPO / REPORT_PATH)
    assert [(run.host, run.status) for run in runs] == [(victim["address"], "ok")]
    pod_shell(sandbox, victim, f"test -s {dropped[victim['address']]}")


def test_a_spent_budget_starts_no_new_batch_and_rerun_finishes_them(sandbox):
    pods = sandbox["pods"]
    first = pods[0]
    stop_one_pod(first["name"])
    try:
        result = subprocess.run(
            [*ROLLOUT, "--batch", "1", "--fail-percent", "0"],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
    finally:
        restart_pod(first["name"])
    assert result.returncode == 1, result.stderr[-3000:]
    runs = read_report(REPO / REPORT_PATH)
    assert [run.host for run in runs] == [pod["address"] for pod in pods]
    assert runs[0].status == "unreachable" and "cannot connect" in (runs[0].cause or "")
    for run in runs[1:]:
        assert run.status == "not run" and run.changed == 0
        assert "failure budget spent: 1 of 3 pods failed" in (run.cause or "")
    assert "--> Batch 1 of 3" in result.stderr and "--> Batch 2 of 3" not in result.stderr

    rerun = subprocess.run(
        [*ROLLOUT, "--limit", "last_failed", "--batch", "2"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert [run.status for run in read_report(REPO / REPORT_PATH)] == ["ok"] * 3


@pytest.mark.parametrize(("keepalive_s", "survives"), [(1, True), (60, False)])
def test_keepalives_keep_an_idle_connection_through_a_nat_that_drops_idle_ones(
    sandbox, keepalive_s, survives, tmp_path
):
    """A pod waiting while another fetches: idle for 4 s behind a relay that cuts after 2 s."""
    from pyinfra.api import Config, Inventory, State
    from pyinfra.api.command import StringCommand
    from pyinfra.api.connect import connect_all, disconnect_all
    from pyinfra.context import ctx_state

    from fleet.ssh import keepalive_config

    pod = sandbox["pods"][0]
    port = free_port()
    relay = start_listening(
        [
            *(sys.executable, "-m", "sandbox.idle_cut", "--listen", f"127.0.0.1:{port}"),
            *("--to", f"{pod['address']}:{pod['port']}", "--idle", "2"),
        ],
        port,
    )
    config = tmp_path / "ssh_config"
    config.write_text(keepalive_config("", keepalive_s))
    try:
        data = {
            **dict(pod_hosts(sandbox))[pod["address"]],
            "ssh_port": port,
            "ssh_hostname": "127.0.0.1",
            # What the inventories give every pod: an ssh_config with the interval.
            "ssh_config_file": str(config),
        }
        inventory = Inventory(([("relayed-pod", data)], {}))
        state = State(inventory, Config(CONNECT_TIMEOUT=5))
        ctx_state.set(state)
        connect_all(state)
        host = inventory.get_host("relayed-pod")
        try:
            time.sleep(4)
            try:
                worked, _ = host.run_shell_command(StringCommand("true"))
            except (OSError, EOFError, SSHException):
                worked = False
            assert worked is survives
        finally:
            disconnect_all(state)
    finally:
        relay.kill()
        relay.wait()
