"""Templates rendered as the tasks render them."""

from __future__ import annotations

from tasks import render
from tasks.desired import MODEL_DIRS


def test_extra_model_paths_point_every_folder_at_the_volume():
    text = render("extra_model_paths.yaml.j2", models_dir="/workspace/models", folders=MODEL_DIRS)
    lines = text.splitlines()
    assert "    base_path: /workspace/models" in lines
    for folder in MODEL_DIRS:
        assert f"    {folder}: {folder}" in lines
    # ComfyUI's older folder names reach the same files.
    assert "    unet: diffusion_models" in lines and "    clip: text_encoders" in lines
