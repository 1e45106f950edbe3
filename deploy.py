"""The recipe of a ComfyUI GPU pod.

    pyinfra inventories/runpod.py deploy.py          # pods over SSH
    pyinfra @local deploy.py -y --data phase=image   # inside docker build

Settings come from group_data, the inventory, --data and the environment (podforge/config.py);
the GPUs from nvidia-smi; the Plan (podforge/plan.py) decides the rest.
"""

from tasks import comfyui, desired, models, preflight, python_stack, services, system

settings = desired.settings()
plan = desired.plan(settings)
model_files = desired.model_files(plan)

if preflight.passes(settings, plan, model_files):
    system.install(settings, plan)
    python_stack.install(settings, plan)
    comfyui.install(settings, plan)
    models.install(settings, plan, model_files)
    services.install(settings, plan)
