"""What starts ComfyUI: the plan on the pod, one env file per instance, start.sh."""

from __future__ import annotations

import json

from pyinfra.api import deploy

from operations import files
from podforge.config import Settings
from podforge.plan import Plan
from tasks import render
from tasks.desired import Pod


@deploy("Services")
def install(settings: Settings, plan: Plan, pod: Pod) -> None:
    files.content(
        name="The pod's plan",
        dest=f"{settings.podforge_dir}/plan.json",
        text=json.dumps(plan.model_dump(mode="json"), indent=2) + "\n",
        digests=pod.files,
    )
    for instance in plan.comfyui:
        files.content(
            name=f"ComfyUI instance {instance.device} (port {instance.port})",
            dest=f"{settings.podforge_dir}/comfyui-{instance.device}.env",
            text=render("comfyui.env.j2", instance=instance),
            digests=pod.files,
        )
    files.content(
        name="start.sh",
        dest=f"{settings.workspace_dir}/start.sh",
        text=render("start.sh.j2", settings=settings, plan=plan),
        digests=pod.files,
        mode="755",
    )
