"""Verify, last in the recipe: the pod serves what its plan says (`podforge verify`).

A deploy that changes something runs the check after its changes, live. A deploy that
changes nothing judges by facts read before any operation (the pod is already final), so a
second run still reports zero changes and a dead program still fails its host: the pod-state
fact's answer of ComfyUI and supervisor (podforge/probe/serving.py, in the command every deploy
runs anyway) and, only when that finds a problem, the quick check, which gives a program
still starting its time (`podforge verify --quick`).
"""

from __future__ import annotations

import shlex

from pyinfra import host, logger, state
from pyinfra.context import ctx_host
from pyinfra.operations import python

from facts.serves import PodServes
from podforge.core.auth import auth_files
from podforge.core.config import Settings
from podforge.core.plan import Plan
from podforge.core.services import env_paths
from podforge.pod.verify import serving_line
from tasks.desired import Pod
from tasks.python_stack import venv_wanted_file
from tasks.streamed import run_streamed


def command(settings: Settings, quick: bool = False) -> str:
    argv = [
        f"{settings.tools_dir}/bin/podforge",
        "verify",
        "--venv",
        settings.venv_dir,
        "--plan",
        f"{settings.podforge_dir}/plan.json",
        "--logs",
        f"{settings.workspace_dir}/logs",
        "--timeout",
        str(settings.verify_timeout),
        "--venv-wanted",
        venv_wanted_file(settings),
    ]
    if settings.enable_r2_sync:
        argv += ["--r2sync", env_paths(settings)["r2"]]
    if quick:
        argv.append("--quick")
    else:
        argv += ["--workflows", settings.workflows_stamp, "--comfyui-dir", settings.comfyui_dir]
        argv += ["--models-dir", settings.models_dir, "--smoke"]
        if settings.comfyui_auth:
            argv += ["--login", auth_files(settings.workspace_dir).credentials]
    return shlex.join(argv)


def deploy_changes() -> bool:
    """Whether this deploy changes anything on this host (its operations planned so far)."""
    return any(data.operation_meta.will_change for data in state.ops[host].values())


def check(settings: Settings, plan: Plan, pod: Pod) -> None:
    if settings.phase != "pod":
        # image: nothing runs in a build; boot: start.sh verifies after supervisord starts.
        host.noop(f"verify runs when the services run (phase {settings.phase})")
        return
    if deploy_changes():
        python.call(
            name="Verify: ComfyUI serves every node and runs a workflow, r2sync works",
            function=run_streamed,
            command=command(settings) + " 2>&1",
            failure="the pod does not serve as planned: see the verify lines above",
        )
        return
    # Nothing changed: what can break without a deploy (ComfyUI, the programs) is asked;
    # the S3 round trip and torch's view of the GPUs stand from the run that last changed it.
    if pod.serving == []:
        r2sync = "runs" if settings.enable_r2_sync else None
        host.noop(serving_line([instance.port for instance in plan.comfyui], r2sync))
        return
    result = host.get_fact(PodServes, command=command(settings, quick=True))
    if result["ok"]:
        host.noop("verify: " + " / ".join(result["lines"]))
        return
    for line in result["lines"]:
        logger.error(f"{host.print_prefix}{line}")
    # The Host itself, not pyinfra's `host` proxy: outside this host's greenlet the proxy
    # hashes as another object, so `host in state.failed_hosts` would miss it.
    state.fail_hosts({ctx_host.get()})
