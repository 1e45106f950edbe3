"""ComfyUI's directory layout (core and custom nodes at pinned commits come with a later task)."""

from __future__ import annotations

import posixpath

from pyinfra.api import deploy
from pyinfra.operations import files

from podforge.config import Settings
from podforge.plan import Plan

MODEL_DIRS = (
    "diffusion_models",
    "text_encoders",
    "clip_vision",
    "vae",
    "loras",
    "annotators",
)


@deploy("ComfyUI layout")
def install(settings: Settings, plan: Plan) -> None:
    for sub in MODEL_DIRS:
        files.directory(
            name=f"Models directory {sub}",
            path=posixpath.join(settings.models_dir, sub),
        )
    files.directory(name="ComfyUI output directory", path=f"{settings.comfyui_dir}/output")
