"""The pod's programs on real sandbox pods: supervisord runs ComfyUI per device and r2sync.

Exactly the plan's flags, restarts only of what changed, a killed ComfyUI brought back,
outputs in the S3, and verify failing its host with the cause.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import wait_for
from e2e.conftest import (
    comfyui_answers,
    control_hub,
    files_holding,
    pod_shell,
    running_programs,
)
from sandbox.converge import HostResult, converge, converge_pods

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def running(sandbox):
    results = converge()
    assert all(not r.failed for r in results.values()), results
    return results


def pids(sandbox, pod) -> dict[str, int]:
    return running_programs(sandbox, pod)


def plan_of(sandbox, pod):
    return json.loads(pod_shell(sandbox, pod, "cat /opt/podforge/plan.json"))


def cmdline(sandbox, pod, pid) -> list[str]:
    raw = pod_shell(sandbox, pod, f"tr '\\0' '\\n' < /proc/{pid}/cmdline")
    return raw.splitlines()


def test_every_instance_runs_with_exactly_the_plans_flags(running, sandbox):
    for pod in sandbox["pods"]:
        plan = plan_of(sandbox, pod)
        programs = pids(sandbox, pod)
        comfyuis = {f"comfyui-{i['device']}" for i in plan["comfyui"]}
        assert set(programs) == comfyuis | {"r2sync", "nginx"}
        for instance in plan["comfyui"]:
            argv = cmdline(sandbox, pod, programs[f"comfyui-{instance['device']}"])
            assert argv[1:] == ["main.py", *instance["args"]]
            # Behind the login: its private port of the pod's address, nginx on the public one.
            assert instance["args"][-4:] == [
                "--listen",
                pod["address"],
                "--port",
                str(instance["port"] + 10000),
            ]


def test_no_secret_on_a_command_line_or_in_a_readable_file(running, sandbox):
    secret = sandbox["s3"]["secret_key"]
    for pod in sandbox["pods"]:
        for pid in pids(sandbox, pod).values():
            assert secret not in " ".join(cmdline(sandbox, pod, pid))
        modes = pod_shell(
            sandbox, pod, "stat -c '%a %n' /opt/podforge/secrets /opt/podforge/secrets/*"
        )
        assert modes.split("\n")[0].startswith("700 ")
        assert all(line.startswith("600 ") for line in modes.strip().splitlines()[1:])
        holding = files_holding(sandbox, pod, secret)
        assert holding and all(line.startswith("600 ") for line in holding), holding


def test_an_output_arrives_in_the_bucket(running, sandbox):
    pod = sandbox["pods"][0]
    name = f"e2e-{pod['name']}-{int(time.time())}.png"
    pod_shell(
        sandbox,
        pod,
        f"head -c 100000 /dev/urandom > /workspace/ComfyUI/output/{name}"
        f" && touch -d '1 minute ago' /workspace/ComfyUI/output/{name}",
    )
    local = pod_shell(sandbox, pod, f"sha256sum /workspace/ComfyUI/output/{name}").split()[0]
    # rclone stores objects as files: read the bucket from disk (boto3 in this process
    # would meet gevent's late ssl patch from pyinfra's CLI module).
    # Its key names the pod (the inventory's pod_name: no RUNPOD_POD_ID in the sandbox) and
    # the day of its first upload.
    day = time.strftime("%Y-%m-%d", time.gmtime())
    bucket = Path(sandbox["s3"]["dir"]) / sandbox["s3"]["bucket"]
    stored = bucket / "outputs" / pod["name"] / day / name
    wait_for(stored.exists)
    wait_for(lambda: hashlib.sha256(stored.read_bytes()).hexdigest() == local)


def test_a_killed_comfyui_is_brought_back(running, sandbox):
    pod = sandbox["pods"][0]
    before = pids(sandbox, pod)["comfyui-0"]
    pod_shell(sandbox, pod, f"kill -9 {before}")
    wait_for(lambda: pids(sandbox, pod).get("comfyui-0") not in (None, before))


def test_a_second_deploy_restarts_nothing(running, sandbox):
    before = {pod["name"]: pids(sandbox, pod) for pod in sandbox["pods"]}
    results = converge()
    for result in results.values():
        assert not result.failed and result.changed == []
    assert {pod["name"]: pids(sandbox, pod) for pod in sandbox["pods"]} == before


def only(sandbox, pod, **data: object) -> HostResult:
    """One pod converged with ``data`` on top of its settings (the others left alone)."""
    workdir = Path(sandbox["base"])
    return converge_pods({pod["name"]: data}, workdir=workdir)[pod["address"]]


# Run in a process of its own, so this test watches the pod while the deploy runs.
DEPLOY_ONE_POD = (
    "import json, sys\n"
    "from pathlib import Path\n"
    "from sandbox.converge import converge_pods\n"
    "results = converge_pods(json.loads(sys.argv[1]), workdir=Path(sys.argv[2]))\n"
    "sys.exit(1 if any(result.failed for result in results.values()) else 0)\n"
)


def start_deploy(sandbox, data: dict[str, dict[str, object]], log: Path) -> subprocess.Popen:
    """A deploy of the pods ``data`` names (with their settings), in a process of its own
    (a test may kill it), its output in ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-c", DEPLOY_ONE_POD, json.dumps(data), sandbox["base"]],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_new_comfyui_args_restart_comfyui_alone_and_it_answers_before_the_models_are_in(
    running, sandbox, tmp_path
):
    pod = sandbox["pods"][0]
    before = pids(sandbox, pod)
    port = plan_of(sandbox, pod)["comfyui"][0]["private_port"]
    manifest = json.loads(pod_shell(sandbox, pod, "cat /opt/podforge/manifest.json"))
    dropped = manifest[0]["dest"]
    pod_shell(sandbox, pod, f"rm {dropped}")
    # The dropped file (64 KiB) comes at 512 B/s over plain HTTP (two minutes, far longer
    # than ComfyUI takes to start on the new flags) until the new ComfyUI was seen answering.
    control_hub(sandbox, "xet", {"enabled": False})
    control_hub(sandbox, "faults", {"throttle_bps": 512})
    data = {pod["name"]: {"comfyui_args": "--cpu --disable-smart-memory"}}
    log = tmp_path / "deploy.log"
    answered_while_missing = False
    try:
        deploy = start_deploy(sandbox, data, log)
        try:
            while deploy.poll() is None:
                # The new ComfyUI (its pid is no longer the old one's) answers, and after
                # that answer the model file is still not there.
                pid = pids(sandbox, pod).get("comfyui-0")
                if (
                    not answered_while_missing
                    and pid not in (None, before["comfyui-0"])
                    and comfyui_answers(pod["address"], port)
                    and pod_shell(sandbox, pod, f"test -e {dropped}; echo $?") == "1\n"
                ):
                    answered_while_missing = True
                    control_hub(sandbox, "faults", {})  # seen: the rest may come at once
                time.sleep(0.5)
        finally:
            if deploy.poll() is None:
                deploy.kill()
            deploy.wait()
    finally:
        control_hub(sandbox, "faults", {})
        control_hub(sandbox, "xet", {"enabled": True})
    try:
        assert deploy.returncode == 0, log.read_text()[-3000:]
        assert answered_while_missing, log.read_text()[-3000:]
        after = pids(sandbox, pod)
        assert after["r2sync"] == before["r2sync"]
        assert after["comfyui-0"] != before["comfyui-0"]
        assert "--disable-smart-memory" in cmdline(sandbox, pod, after["comfyui-0"])
        assert pod_shell(sandbox, pod, f"test -e {dropped}; echo $?") == "0\n"
    finally:
        assert not only(sandbox, pod).failed


def test_a_fetch_outlives_its_killed_deploy_and_the_next_deploy_finishes_the_pod(
    running, sandbox, tmp_path
):
    pod = sandbox["pods"][0]
    manifest = json.loads(pod_shell(sandbox, pod, "cat /opt/podforge/manifest.json"))
    dropped = manifest[0]["dest"]
    digest = pod_shell(sandbox, pod, f"sha256sum {dropped}").split()[0]
    jobs_before = set(pod_shell(sandbox, pod, "ls /opt/podforge/jobs").split())
    pod_shell(sandbox, pod, f"rm {dropped}")
    # The dropped file comes at 512 B/s over plain HTTP: two minutes, killed long before.
    just_this_pod: dict[str, dict[str, object]] = {pod["name"]: {}}
    control_hub(sandbox, "xet", {"enabled": False})
    control_hub(sandbox, "faults", {"throttle_bps": 512})
    try:
        deploy = start_deploy(sandbox, just_this_pod, tmp_path / "killed.log")
        try:
            # The deploy is killed (a laptop gone) once its fetch job runs on the pod.
            wait_for(
                lambda: set(pod_shell(sandbox, pod, "ls /opt/podforge/jobs").split()) - jobs_before
            )
        finally:
            deploy.kill()
            deploy.wait()
        (job,) = set(pod_shell(sandbox, pod, "ls /opt/podforge/jobs").split()) - jobs_before
        assert pod_shell(sandbox, pod, f"test -e /opt/podforge/jobs/{job}/exit; echo $?") == "1\n"
    finally:
        control_hub(sandbox, "faults", {})
        control_hub(sandbox, "xet", {"enabled": True})
    # The next deploy finds the pod as the killed one left it and finishes it; the orphaned
    # fetch ran on, to its end, without the deploy that started it.
    assert not only(sandbox, pod).failed
    assert pod_shell(sandbox, pod, f"sha256sum {dropped}").split()[0] == digest
    wait_for(lambda: pod_shell(sandbox, pod, f"cat /opt/podforge/jobs/{job}/exit 2>&1") == "0\n")


def test_a_flag_comfyui_rejects_never_reaches_a_program(running, sandbox):
    before = {pod["name"]: pids(sandbox, pod) for pod in sandbox["pods"]}
    with pytest.raises(Exception, match="unknown ComfyUI flag '--medvram'"):
        converge(data={"comfyui_args": "--medvram"})
    assert {pod["name"]: pids(sandbox, pod) for pod in sandbox["pods"]} == before


def test_wrong_r2_keys_fail_verify_naming_r2sync(running, sandbox, caplog, capfd):
    pod = sandbox["pods"][0]
    before = pids(sandbox, pod)
    try:
        assert only(sandbox, pod, r2_secret_access_key="wrong-e2e-secret").failed
        captured = capfd.readouterr()
        shown = caplog.text + captured.out + captured.err
        assert "r2sync --test failed: R2 refused the credentials" in shown
        after = pids(sandbox, pod)
        assert after["comfyui-0"] == before["comfyui-0"]  # the R2 change restarts r2sync only
        assert after.get("r2sync") != before["r2sync"]
        assert "wrong-e2e-secret" not in shown
    finally:
        assert not only(sandbox, pod).failed


def test_a_no_op_fails_the_pod_whose_program_stopped_and_passes_once_it_is_back(
    running, sandbox, caplog, capfd
):
    pod = sandbox["pods"][0]
    pod_shell(sandbox, pod, "supervisorctl stop r2sync")
    try:
        results = converge()
        stopped = results.pop(pod["address"])
        assert stopped.failed and stopped.changed == []  # nothing changed, and still it failed
        assert all(not r.failed and r.changed == [] for r in results.values()), results
        captured = capfd.readouterr()
        shown = caplog.text + captured.out + captured.err
        assert "verify: FAILED r2sync is STOPPED; last log lines: " in shown
    finally:
        pod_shell(sandbox, pod, "supervisorctl start r2sync")
    results = converge()
    assert all(not r.failed and r.changed == [] for r in results.values()), results
