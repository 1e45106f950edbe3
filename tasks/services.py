"""What starts ComfyUI: the plan on the pod, one env file per instance, start.sh."""

from __future__ import annotations

import io
import json

from pyinfra.api import deploy
from pyinfra.operations import files

from podforge.config import Settings
from podforge.plan import Plan
from tasks import TEMPLATES


@deploy("Services")
def install(settings: Settings, plan: Plan) -> None:
    files.put(
        name="The pod's plan",
        src=io.StringIO(json.dumps(plan.model_dump(mode="json"), indent=2) + "\n"),
        dest=f"{settings.podforge_dir}/plan.json",
    )
    for instance in plan.comfyui:
        files.template(
            name=f"ComfyUI instance {instance.device} (port {instance.port})",
            src=str(TEMPLATES / "comfyui.env.j2"),
            dest=f"{settings.podforge_dir}/comfyui-{instance.device}.env",
            instance=instance,
        )
    files.template(
        name="start.sh",
        src=str(TEMPLATES / "start.sh.j2"),
        dest=f"{settings.workspace_dir}/start.sh",
        mode="755",
        settings=settings,
        plan=plan,
    )
