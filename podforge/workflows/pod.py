"""`podforge workflows`, on the pod.

- ``check [FILE...]``: for each workflow, every model file it loads and whether the pod has
  it, every node type it uses and whether ComfyUI or an installed node pack provides it
  (their NODE_CLASS_MAPPINGS, read without importing them). Exit 1 naming each missing file
  and node type. Without FILEs: the workflows installed in ComfyUI's user directory.
- ``install --request FILE --stamp FILE``: fit each feature's upstream example to this pod
  (the request the deploy writes: ``fitting.install_request``) into ComfyUI's user
  directory; remove the ones an earlier request installed and this one does not; record what
  was written in the stamp (the deploy's pod-state fact compares it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

from packaging.version import Version

from podforge.workflows.checks import check, node_class_names, references
from podforge.workflows.fitting import USER_WORKFLOWS, StackAbilities, fit
from podforge.workflows.graph import read_nodes

# Where ComfyUI's own nodes are registered (its core loaders and the comfy_extras).
CORE_SOURCES = ("nodes.py", "comfy_extras/*.py", "comfy_api_nodes/*.py")


def provided_node_types(comfyui_dir: Path) -> set[str]:
    sources = [p for pattern in CORE_SOURCES for p in comfyui_dir.glob(pattern)]
    sources += (comfyui_dir / "custom_nodes").glob("*/**/*.py")
    provided: set[str] = set()
    for source in sources:
        provided |= node_class_names(source.read_text(errors="replace"))
    return provided


def model_files(models_dir: Path) -> set[str]:
    """Every file under the models dir, relative to it (what ComfyUI's loaders list)."""
    found = set()
    for root, _, names in os.walk(models_dir, followlinks=True):
        for name in names:
            found.add(str(Path(root, name).relative_to(models_dir)))
    return found


def user_workflow_files(comfyui_dir: Path) -> list[Path]:
    """The workflow files in the UI's Workflows panel."""
    return sorted((comfyui_dir / USER_WORKFLOWS).glob("*.json"))


def check_workflows(
    paths: list[Path], comfyui_dir: Path, models_dir: Path, served: set[str] | None = None
) -> bool:
    """Print each workflow's models and node types; whether all are there. ``served``: the
    node types a running ComfyUI serves (/object_info); else those the sources register."""
    files = model_files(models_dir)
    provided = served if served is not None else provided_node_types(comfyui_dir)
    failed = False
    for path in paths:
        try:
            result = check(read_nodes(str(path), json.loads(path.read_text())), files, provided)
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
    return not failed


def check_verb(args: argparse.Namespace) -> int:
    comfyui_dir = Path(args.comfyui_dir)
    models_dir = Path(args.models_dir or comfyui_dir / "models")
    paths = [Path(p) for p in args.files] or user_workflow_files(comfyui_dir)
    if not paths:
        print(f"workflows: none installed in {comfyui_dir / USER_WORKFLOWS}")
        return 1
    return 0 if check_workflows(paths, comfyui_dir, models_dir) else 1


def _write(path: Path, data: bytes) -> None:
    """Whole or not at all: ComfyUI may list the directory meanwhile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    partial.replace(path)


def install_verb(args: argparse.Namespace) -> int:
    request_bytes = Path(args.request).read_bytes()
    request = json.loads(request_bytes)
    stack = StackAbilities(
        torch=Version(request["stack"]["torch"]),
        sageattention=bool(request["stack"]["sageattention"]),
    )
    stamp = Path(args.stamp)
    earlier = json.loads(stamp.read_text())["files"] if stamp.exists() else {}
    written: dict[str, str] = {}
    for wanted in request["workflows"]:
        example = Path(wanted["example"])
        try:
            fitted, changes = fit(json.loads(example.read_text()), wanted["files"], stack)
        except (OSError, ValueError) as error:
            print(
                f"workflows: FAILED {wanted['feature']}: its upstream example {example}"
                f" cannot be read ({error}): is its node checked out at its pin?"
            )
            return 1
        data = (json.dumps(fitted, indent=2) + "\n").encode()
        _write(Path(wanted["dest"]), data)
        written[wanted["dest"]] = hashlib.sha1(data).hexdigest()
        print(f"workflows: {wanted['dest']} fitted from {example.name}: {len(changes)} widgets")
        for change in changes:
            print(
                f"  {change.node_type} #{change.node_id} [{change.index}]:"
                f" {change.old!r} -> {change.new!r}"
            )
        for ref in references(read_nodes(str(example), fitted)):
            if ref.role not in wanted["files"]:
                print(f"  kept {ref.node_type} #{ref.node_id} {ref.path}: no planned file")
    for dest in sorted(set(earlier) - set(written)):
        if Path(dest).exists():
            Path(dest).unlink()
            print(f"workflows: removed {dest} (its feature is off)")
    stamp_data = {"request": hashlib.sha256(request_bytes).hexdigest(), "files": written}
    _write(stamp, (json.dumps(stamp_data, indent=2) + "\n").encode())
    return 0


def main(args: argparse.Namespace) -> int:
    return install_verb(args) if args.workflows_verb == "install" else check_verb(args)
