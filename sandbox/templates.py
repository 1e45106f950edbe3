"""ComfyUI's official templates the sandbox provisions for (PyPI comfyui-workflow-templates,
a dev dependency): the hub serves stand-ins for every model they name, from Hugging Face
and from CivitAI, so a deploy of them fetches and verifies each."""

from __future__ import annotations

import json
from pathlib import Path

import comfyui_workflow_templates

from podforge.workflows.needs import workflow_needs

TEMPLATES_DIR = Path(comfyui_workflow_templates.__file__).parent / "templates"
# Core nodes only (all in the pinned ComfyUI); default names a Hugging Face checkpoint,
# lora two CivitAI LoRAs and a CivitAI checkpoint.
SANDBOX_TEMPLATES = ("default.json", "lora.json")


def template_path(name: str) -> Path:
    return TEMPLATES_DIR / name


def template_models() -> tuple[list[tuple[str, str]], dict[int, str]]:
    """(Hugging Face (repo, path) pairs, CivitAI version id -> file name) the templates name."""
    hf, civitai = [], {}
    for name in SANDBOX_TEMPLATES:
        needs = workflow_needs(name, json.loads(template_path(name).read_text()), [], [])
        for model in needs.models:
            source = model.source
            if source is not None and source.kind == "huggingface":
                hf.append((str(source.repo), str(source.path)))
            elif source is not None and source.kind == "civitai":
                civitai[int(source.civitai or 0)] = model.name
    return hf, civitai
