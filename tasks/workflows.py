"""Workflows in ComfyUI's user workflows directory (the UI's Workflows panel):

- the user's own (setting ``workflows``), as they are: the models and node packs they name
  joined the settings already (tasks/desired.py); verify checks them;
- fitted ones: each enabled feature's upstream example, with its model widgets naming the
  files this plan fetched (the variant its GPU chose) and its precision and attention
  widgets set to what the stack runs. The example lives in a checkout on the pod, so the pod
  fits it (`podforge workflows install`); the deploy writes the request and compares the
  stamp the last install left (in the pod-state fact): a no-op costs no command.
"""

from __future__ import annotations

import hashlib
import json
import posixpath

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import python

from operations import pod_files
from podforge.core.config import Settings
from podforge.core.plan import Plan
from podforge.workflows import fitting
from tasks.desired import Pod, workflow_files
from tasks.streamed import run_streamed


@deploy("Workflows")
def install(settings: Settings, plan: Plan, pod: Pod) -> None:
    _users(settings, pod)
    _fitted(settings, plan, pod)


def _users(settings: Settings, pod: Pod) -> None:
    if settings.phase == "boot":
        host.noop("the deploy installed the workflows its settings name")
        return
    folder = f"{settings.comfyui_dir}/{fitting.USER_WORKFLOWS}"
    files = workflow_files(settings)
    for file in files:
        pod_files.content(
            name=f"Workflow {file.name}",
            dest=f"{folder}/{file.name}",
            text=file.text,
            digests=pod.files,
        )
    # What verify checks besides the fitted ones (their paths; none: an empty list).
    pod_files.content(
        name="The workflows verify checks",
        dest=fitting.user_workflows_list(settings.podforge_dir),
        text=json.dumps([f"{folder}/{file.name}" for file in files]) + "\n",
        digests=pod.files,
    )


def _fitted(settings: Settings, plan: Plan, pod: Pod) -> None:
    if settings.phase == "image":
        host.noop("workflows are fitted at boot, once the GPU (so each variant) is known")
        return
    try:
        request = fitting.install_request(settings, plan)
    except ValueError as error:
        raise DeployError(f"{host.name}: {error}") from None
    text = json.dumps(request, indent=2, sort_keys=True) + "\n"
    names = ", ".join(posixpath.basename(w["dest"]) for w in request["workflows"])
    installed = pod.workflows
    if installed is None and not request["workflows"]:
        host.noop("no enabled feature ships a workflow")
        return
    if (
        installed is not None
        and installed["request"] == hashlib.sha256(text.encode()).hexdigest()
        and installed["files"] == installed["current"]
    ):
        host.noop(f"workflows fitted to this pod are in place ({names or 'none'})")
        return
    request_file = f"{settings.podforge_dir}/workflows-request.json"
    pod_files.content(name="Workflows request", dest=request_file, text=text, digests=pod.files)
    python.call(
        name=f"Fit workflows to this pod ({names or 'remove the disabled ones'})",
        function=run_streamed,
        command=(
            f"{settings.tools_dir}/bin/podforge workflows install"
            f" --request {request_file} --stamp {settings.workflows_stamp} 2>&1"
        ),
        failure="the workflows were not fitted: see the workflows lines above",
    )
