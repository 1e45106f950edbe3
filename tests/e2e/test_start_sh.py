"""start.sh, the container's entrypoint, on real sandbox pods: the boot phase converges the
pod for the GPU it has (seconds, zero changes when nothing changed), then supervisord serves
while the models the boot found missing arrive.
"""

from __future__ import annotations

import json
import shlex

import pytest

from e2e.conftest import changed_operations, pod_shell
from sandbox.control import boot_models_wait
from sandbox.converge import converge
from sandbox.pods import GPU_PROFILES

pytestmark = pytest.mark.e2e

VERIFY = (
    "/opt/podforge/tools/bin/podforge verify --venv /workspace/venv"
    " --plan /opt/podforge/plan.json --timeout 60"
    " --r2sync /opt/podforge/secrets/r2.env"
)


@pytest.fixture(scope="module")
def prepared(sandbox):
    results = converge()
    assert all(not r.failed for r in results.values()), results
    return results


def boot(sandbox, pod) -> str:
    """Stop supervisord and its programs, run start.sh as a container start would, wait
    until the pod serves (podforge verify); the boot phase's output."""
    pod_shell(
        sandbox,
        pod,
        "supervisorctl shutdown > /dev/null && for i in $(seq 200); do"
        " pgrep -x supervisord > /dev/null || exit 0; sleep 0.1; done; exit 1",
    )
    pod_shell(sandbox, pod, "setsid /workspace/start.sh > /tmp/start.log 2>&1 < /dev/null &")
    # start.sh execs supervisord once its boot phase is done: then the plan is final.
    pod_shell(
        sandbox,
        pod,
        "for i in $(seq 1200); do pgrep -x supervisord > /dev/null && exit 0;"
        " grep -q 'pyinfra error' /tmp/start.log && exit 1; sleep 0.1; done; exit 1",
    )
    verified = pod_shell(sandbox, pod, VERIFY, check=False)
    log = pod_shell(sandbox, pod, "cat /tmp/start.log")
    assert verified.startswith("exit=0\n"), f"{verified}\n--- start.sh:\n{log}"
    return log


def swap_gpu(sandbox, pod, profile: str) -> None:
    """The pod's (fake) nvidia-smi now answers as another recorded GPU."""
    for name in ("query.txt", "list.txt", "exit_code"):
        content = (GPU_PROFILES / profile / name).read_text()
        pod_shell(
            sandbox,
            pod,
            f"printf %s {shlex.quote(content)} > /etc/podforge-fake-gpu/{name}",
        )


def test_start_sh_boots_a_prepared_pod_with_zero_changes(prepared, sandbox):
    pod = sandbox["pods"][0]
    log = boot(sandbox, pod)
    assert changed_operations(log) == []
    assert "Grand total" in log


def test_a_pod_whose_gpu_changed_boots_with_its_new_flags_models_and_stack(prepared, sandbox):
    # The RTX 4080 SUPER's pod stays an RTX 5090 after this test, as consistent a pod as the
    # others: turning it back would sync and byte-compile torch 2.5 once more (~50 s of CI).
    # The session's record still says rtx-4080-super: the modules after this one
    # (test_templates, test_workflows) do not choose pods by GPU; one that does
    # (test_openmmlab, test_software) must run before it.
    pod = next(p for p in sandbox["pods"] if p["gpu"] == "rtx-4080-super")
    before = json.loads(pod_shell(sandbox, pod, "cat /opt/podforge/plan.json"))
    swap_gpu(sandbox, pod, "rtx-5090")
    log = boot(sandbox, pod)
    plan = json.loads(pod_shell(sandbox, pod, "cat /opt/podforge/plan.json"))
    # 32 GB: the table's row for it (16 GB offloaded sequentially).
    assert (before["comfyui"][0]["memory_mode"], plan["comfyui"][0]["memory_mode"]) == (
        "sequential_cpu_offload",
        "model_cpu_offload",
    )
    # Blackwell (sm_120): torch 2.8 built for it, synced at boot from the volume's uv cache.
    assert (before["stack"], plan["stack"]) == ("torch25-cu124", "torch28-cu128")
    torch = pod_shell(
        sandbox, pod, "/workspace/venv/bin/python -c 'import torch; print(torch.__version__)'"
    )
    assert torch.startswith("2.8.0")
    assert "Models | Start fetching" in " ".join(changed_operations(log))
    assert pod_shell(sandbox, pod, boot_models_wait(), check=False).startswith("exit=0\n")
    new = {m["dest"] for m in plan["models"]} - {m["dest"] for m in before["models"]}
    assert new, "a 32 GB GPU gets other model variants than a 16 GB one"
    sizes = pod_shell(sandbox, pod, "stat -c '%s %n' " + " ".join(sorted(new)))
    assert len(sizes.splitlines()) == len(new)
    section = pod_shell(sandbox, pod, "cat /etc/supervisor/conf.d/podforge-comfyui-0.conf")
    assert f"main.py {' '.join(plan['comfyui'][0]['args'])}\n" in section
    running = pod_shell(sandbox, pod, "tr '\\0' ' ' < /proc/$(supervisorctl pid comfyui-0)/cmdline")
    assert running.endswith(f"main.py {' '.join(plan['comfyui'][0]['args'])} ")
