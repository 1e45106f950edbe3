"""docker/Dockerfile built for real (buildah, a local base from the pods' rootfs), then pods
booted from the image: start.sh fetches the models of each pod's GPU and serves while they
arrive, without changing anything the image installed. A second build with only podforge's
code changed takes the stack from the cache; a bad setting fails the build in one line.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import wait_for
from e2e.conftest import (
    changed_operations,
    comfyui_answers,
    control_hub,
    pod_shell,
)
from sandbox import control, image
from sandbox.control import boot_models_wait

pytestmark = [pytest.mark.e2e, pytest.mark.podless]

TAG = "localhost/podforge-e2e"
# The pod-converging e2e session's pods listen on .40-.42 (bin/test runs it beside this one).
IMAGE_POD_ADDRESSES = {"rtx-4080-super": 43, "h100": 44}
# What the image phase installed: a boot must leave these deploys unchanged.
IMAGE_DEPLOYS = ("System packages", "Pod tools", "ComfyUI", "Python environment")
STACK_STEP = "RUN PYTHONPATH=/opt/podforge/stack-inputs/tools"
DEPLOY_STEP = "RUN cd /opt/podforge/src && /opt/podforge/deployer/bin/pyinfra @local"


@pytest.fixture(scope="module")
def builder(sandbox, tmp_path_factory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("image")
    buildah = image.Buildah(work / "buildah")
    try:
        args = {**image.build_args(sandbox), "BASE": image.base_image(buildah)}
        yield {
            "buildah": buildah,
            "work": work,
            "args": args,
            "volumes": image.build_volumes(Path(sandbox["base"]) / "standins"),
            "context": image.copy_context(work / "context"),
        }
    finally:
        buildah.remove_all()


def build(builder: dict[str, Any], log: str, **extra: str) -> image.Build:
    return image.build(
        builder["buildah"],
        builder["context"],
        TAG,
        {**builder["args"], **extra},
        builder["volumes"],
        builder["work"] / log,
    )


@pytest.fixture(scope="module")
def built(builder) -> image.Build:
    result = build(builder, "build-1.log")
    assert result.returncode == 0, result.output[-3000:]
    size = image.image_size(builder["buildah"], TAG)
    print(f"image build: {result.seconds:.0f} s, {size}")
    return result


def step_output(output: str, step: str) -> str:
    """What buildah printed for the last build step whose instruction starts with ``step``."""
    starts = [m.start() for m in re.finditer(rf"STEP \d+/\d+: {re.escape(step)}", output)]
    assert starts, f"no step {step!r} in the build output"
    rest = output[starts[-1] :]
    following = re.search(r"\n\[\d+/\d+\] STEP|\nSTEP \d+/\d+:|\nCOMMIT", rest)
    return rest[: following.start()] if following else rest


def test_the_image_phase_installs_the_stack_once(built):
    # The stack layer synced the committed lock; the deploy after it found packages,
    # checkouts and the lock in place and added podforge's own wheel alone.
    stack, deploy = (step_output(built.output, step) for step in (STACK_STEP, DEPLOY_STEP))
    assert "image: pip sync --python /opt/podforge/tools/bin/python --compile-bytecode" in stack
    assert "image: pip sync --python /opt/venv/bin/python --compile-bytecode" in stack
    assert "image: pip check --python /opt/venv/bin/python" in stack
    changed = changed_operations(deploy)
    stack_ops = re.compile(
        r"^System packages \||^ComfyUI \| .* at \w{12}$|^Python environment \| Install"
    )
    assert not [op for op in changed if stack_ops.match(op)], changed
    # The tools' venv came with the layer too; podforge's own wheel comes with the code.
    (synced,) = [op for op in changed if op.startswith("Pod tools | Install ")]
    assert synced.endswith("exactly (1 differ: podforge missing)")
    assert "Installed 1 package" in deploy
    # The checkouts are there, reported unchanged: the layer made them at the same pins.
    assert re.search(r"ComfyUI \| ComfyUI at [0-9a-f]{12}\s+1\s+-\s+-\s+1", deploy)
    assert any(op.startswith("Services") for op in changed)  # start.sh and program sections


def test_a_code_change_reuses_the_stack_layer(built, builder):
    catalog = builder["context"] / "podforge" / "core" / "catalog.py"
    original = catalog.read_text()
    catalog.write_text(original + "\n# a change to podforge's code, not to the stack\n")
    try:
        second = build(builder, "build-2.log")
    finally:
        catalog.write_text(original)
    assert second.returncode == 0, second.output[-3000:]
    assert "Using cache" in step_output(second.output, STACK_STEP)
    # The code did reach the image: the deploy step ran again, on the new files.
    assert "Using cache" not in step_output(second.output, DEPLOY_STEP)
    print(f"rebuild after a code change: {second.seconds:.0f} s (first: {built.seconds:.0f} s)")


def test_a_bad_setting_fails_the_build_in_one_line(built, builder):
    result = build(builder, "build-bad.log", STEADYDANCER_VARIANT="fp32")
    assert result.returncode != 0
    errors = [line for line in result.output.splitlines() if line.startswith("podforge image:")]
    assert errors == [
        "podforge image: STEADYDANCER_VARIANT='fp32' is not accepted:"
        " expected one of auto, fp16, fp8 or gguf"
    ]
    assert "Traceback" not in result.output


@pytest.fixture(scope="module")
def image_pods(built, builder, sandbox) -> Iterator[dict[str, dict[str, Any]]]:
    lower = image.mount_image(builder["buildah"], TAG)
    pods: dict[str, dict[str, Any]] = {}
    try:
        for gpu, octet in IMAGE_POD_ADDRESSES.items():
            pods[gpu] = control.add_pod(gpu, lower, octet, Path(sandbox["base"]))
        yield pods
    finally:
        for pod in pods.values():
            control.remove_pod(pod["name"], Path(sandbox["base"]))


def start_container(sandbox: dict[str, Any], pod: dict[str, Any], slow_models: bool) -> str:
    """Start the pod as RunPod starts a container of the image: its environment, then the
    entrypoint (start.sh); wait until it serves and its models are in. The boot phase's
    output. ``slow_models``: the hub sends 512 B/s until ComfyUI was seen answering while
    the boot's model fetch still ran."""
    state = control.load_state(Path(sandbox["base"]))
    environment = image.run_environment(state, pod)
    with tempfile.TemporaryFile("w+") as env_file:
        # Over stdin, so the secrets are on no command line.
        env_file.write("".join(f"export {k}='{v}'\n" for k, v in environment.items()))
        env_file.seek(0)
        subprocess.run(
            [*control.ssh_argv(state, pod), "umask 077 && cat > /root/container.env"],
            stdin=env_file,
            check=True,
            timeout=60,
        )
    if slow_models:
        control_hub(sandbox, "xet", {"enabled": False})
        control_hub(sandbox, "faults", {"throttle_bps": 512})
    try:
        pod_shell(
            sandbox,
            pod,
            ". /root/container.env;"
            " setsid /opt/podforge/start.sh > /tmp/start.log 2>&1 < /dev/null &",
        )
        pod_shell(
            sandbox,
            pod,
            "for i in $(seq 1800); do pgrep -x supervisord > /dev/null && exit 0;"
            " grep -q 'pyinfra error' /tmp/start.log && exit 1; sleep 0.1; done; exit 1",
            check=False,
        )
        if slow_models:
            plan = json.loads(pod_shell(sandbox, pod, "cat /opt/podforge/plan.json"))
            port = plan["comfyui"][0]["private_port"]
            wait_for(lambda: comfyui_answers(pod["address"], port), timeout=180)
            # It answered, and after that the fetch the boot started had still not ended.
            fetching = pod_shell(sandbox, pod, "test -e /opt/podforge/jobs/boot/exit; echo $?")
            assert fetching == "1\n", "the models were all in before ComfyUI answered"
    finally:
        if slow_models:
            control_hub(sandbox, "faults", {})
            control_hub(sandbox, "xet", {"enabled": True})
    verified = pod_shell(
        sandbox,
        pod,
        "/opt/podforge/tools/bin/podforge verify --venv /opt/venv"
        " --plan /opt/podforge/plan.json --timeout 60"
        " --r2sync /opt/podforge/secrets/r2.env",
        check=False,
    )
    models = pod_shell(sandbox, pod, boot_models_wait(), check=False)
    log = pod_shell(sandbox, pod, "cat /tmp/start.log")
    assert verified.startswith("exit=0\n"), f"{verified}\n--- start.sh:\n{log}"
    assert models.startswith("exit=0\n"), f"{models}\n--- start.sh:\n{log}"
    return log


def test_pods_boot_from_the_image_with_their_own_gpus_variants(image_pods, sandbox):
    plans = {}
    for index, (gpu, pod) in enumerate(image_pods.items()):
        # The first pod's models come slowly: it serves before they are in.
        log = start_container(sandbox, pod, slow_models=index == 0)
        changed = changed_operations(log)
        assert not [op for op in changed if op.startswith(IMAGE_DEPLOYS)], changed
        assert any(op.startswith("Models | Start fetching") for op in changed), changed
        plans[gpu] = json.loads(pod_shell(sandbox, pod, "cat /opt/podforge/plan.json"))
        dests = sorted(model["dest"] for model in plans[gpu]["models"])
        sizes = pod_shell(sandbox, pod, "stat -c %s " + " ".join(dests))
        assert len(sizes.split()) == len(dests)
        assert all(dest.startswith("/workspace/models/") for dest in dests)
    small, large = ({m["dest"] for m in plans[g]["models"]} for g in IMAGE_POD_ADDRESSES)
    assert small != large, "a 16 GB and an 80 GB GPU get other model variants from one image"
