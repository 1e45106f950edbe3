"""ComfyUI and its custom nodes at pinned commits, and the folders it reads and writes."""

from __future__ import annotations

import posixpath

from pyinfra.api import deploy

from operations import git, pod_files
from podforge.core.config import Settings
from podforge.core.plan import Plan
from tasks import render
from tasks.desired import MODEL_DIRS, Pod, model_dirs


@deploy("ComfyUI")
def install(settings: Settings, plan: Plan, pod: Pod) -> None:
    for dest, pin in settings.checkouts().items():
        git.pinned_checkout(
            name=f"{pin.name} at {pin.commit[:12]}",
            dest=dest,
            url=pin.url,
            commit=pin.commit,
            present=pod.software["repos"][dest],
        )
    pod_files.directories(
        name="Model and output directories",
        paths=[*model_dirs(settings), f"{settings.comfyui_dir}/output"],
        digests=pod.files,
    )
    inside = posixpath.commonpath([settings.comfyui_dir, settings.models_dir])
    if inside != settings.comfyui_dir:
        # ComfyUI reads extra_model_paths.yaml beside main.py at start.
        pod_files.content(
            name=f"extra_model_paths.yaml (models in {settings.models_dir})",
            dest=f"{settings.comfyui_dir}/extra_model_paths.yaml",
            text=render(
                "extra_model_paths.yaml.j2", models_dir=settings.models_dir, folders=MODEL_DIRS
            ),
            digests=pod.files,
        )
