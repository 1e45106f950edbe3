"""The recipe of a ComfyUI GPU pod.

    pyinfra inventories/runpod.py deploy.py          # pods over SSH
    pyinfra @local deploy.py -y --data phase=image   # inside docker build
    pyinfra @local deploy.py --data phase=boot       # start.sh, at container start

Settings come from group_data, the inventory, --data and the environment (podforge/core/config.py);
the GPUs from nvidia-smi; the Plan (podforge/core/plan.py) decides the rest.
"""

from tasks import (
    boot,
    comfyui,
    desired,
    directories,
    models,
    preflight,
    proxy,
    python_stack,
    services,
    system,
    timeline,
    verify,
    workflows,
)

settings = desired.settings()
host_facts = desired.pod_host(settings)
plan = desired.plan(settings, host_facts)
pod = desired.pod(settings, plan, host_facts)
lock = desired.stack_lock(settings, plan, pod)
tools_lock = desired.tools_lock(pod)

if preflight.passes(settings, plan, pod, lock, tools_lock):
    directories.install(settings, pod)
    system.install(settings, plan, pod)
    python_stack.install_tools(settings, plan, pod, tools_lock)
    services.r2_settings(settings, pod)
    # The bytes first, in the background while the rest installs: the stack's, then the
    # models' (ComfyUI starts once its stack is in).
    stack_sync = python_stack.start_environment(settings, plan, pod, lock)
    models.start(settings, plan, pod, after_stack=stack_sync)
    comfyui.install(settings, plan, pod)
    venv_synced = python_stack.install_environment(settings)
    # ComfyUI (re)starts as soon as its stack is in: it answers while the models arrive.
    login = proxy.install(settings, plan, pod)
    services.install(settings, plan, pod, lock, venv_synced, login)
    models.wait(settings, plan, pod)
    workflows.install(settings, plan, pod)
    boot.install(settings, plan, pod)
    verify.check(settings, plan, pod)
    timeline.keep(settings)
