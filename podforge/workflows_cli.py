"""`podforge workflows check [FILE...]`: for each workflow, every model file it loads and
whether the pod has it, every node type it uses and whether ComfyUI or an installed node
pack provides it (their NODE_CLASS_MAPPINGS, read without importing them). Exit 1 naming
each missing file and node type. Without FILEs: the workflows installed in ComfyUI's user
directory.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from podforge import workflows

# Where ComfyUI's own nodes are registered (its core loaders and the comfy_extras).
CORE_SOURCES = ("nodes.py", "comfy_extras/*.py", "comfy_api_nodes/*.py")


def provided_node_types(comfyui_dir: Path) -> set[str]:
    sources = [p for pattern in CORE_SOURCES for p in comfyui_dir.glob(pattern)]
    sources += (comfyui_dir / "custom_nodes").glob("*/**/*.py")
    provided: set[str] = set()
    for source in sources:
        provided |= workflows.node_class_names(source.read_text(errors="replace"))
    return provided


def model_files(models_dir: Path) -> set[str]:
    """Every file under the models dir, relative to it (what ComfyUI's loaders list)."""
    found = set()
    for root, _, names in os.walk(models_dir, followlinks=True):
        for name in names:
            found.add(str(Path(root, name).relative_to(models_dir)))
    return found


def installed_workflows(comfyui_dir: Path) -> list[Path]:
    return sorted((comfyui_dir / "user" / "default" / "workflows").glob("*.json"))


def main(args: argparse.Namespace) -> int:
    comfyui_dir = Path(args.comfyui_dir)
    models_dir = Path(args.models_dir or comfyui_dir / "models")
    paths = [Path(p) for p in args.files] or installed_workflows(comfyui_dir)
    if not paths:
        print(f"workflows: none installed in {comfyui_dir}/user/default/workflows")
        return 1
    files = model_files(models_dir)
    provided = provided_node_types(comfyui_dir)
    failed = False
    for path in paths:
        try:
            result = workflows.check(json.loads(path.read_text()), files, provided)
        except (OSError, ValueError) as error:
            print(f"{path}: cannot be read: {error}")
            failed = True
            continue
        print(f"{path}:")
        for ref in result.present:
            print(f"  ok       model {ref.path}  ({ref.node_type} #{ref.node_id})")
        for ref in result.missing_files:
            print(f"  MISSING  model {ref.path}  ({ref.node_type} #{ref.node_id})")
        print(f"  ok       {len(result.provided)} node types provided")
        for node_type in result.missing_nodes:
            print(f"  MISSING  node type {node_type}: no installed node pack provides it")
        failed |= not result.ok
    summary = "some workflows would not run" if failed else "every workflow has what it loads"
    print(f"workflows: {summary} (models in {models_dir})")
    return 1 if failed else 0
