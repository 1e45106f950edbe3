"""Whether a pod has what a workflow loads: every model file its loaders name (and the files
those load from beside themselves) and every node type it uses. Pure: the pod's files and
node sources are read by ``pod``."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass

from podforge.workflows.fitting import MODEL_WIDGETS
from podforge.workflows.graph import Node, node_types

# Files a model loads from beside itself (ONNX external data: the .onnx names its sibling),
# by the model's file name: without them the loader fails though its widget's file is there.
COMPANION_FILES: dict[str, tuple[str, ...]] = {
    "vitpose_h_wholebody_model.onnx": ("vitpose_h_wholebody_data.bin",),
}


@dataclass(frozen=True)
class Reference:
    node_id: int | str
    node_type: str
    folder: str
    name: str  # as ComfyUI lists it: relative to the folder, "/" between subfolders
    role: str  # which catalog file fills it (a model widget's role); "" when none

    @property
    def path(self) -> str:
        return f"{self.folder}/{self.name}"


def references(nodes: Iterable[Node]) -> list[Reference]:
    """Every model file the nodes name: by their model widgets (MODEL_WIDGETS) and by the
    models they link (``properties.models``, an API prompt's loader inputs)."""
    found = []
    for node in nodes:
        values = node.widgets or []
        named = [
            (widget.folder, values[widget.index], widget.role)
            for widget in MODEL_WIDGETS.get(node.type, ())
            if widget.index < len(values)
        ]
        named += [(model.directory, model.name, "") for model in node.models]
        seen = set()
        for folder, name, role in named:
            if isinstance(name, str) and name:
                # The UI writes subfolders with the separator of the machine that saved it.
                name = name.replace("\\", "/")
                if (folder, name) not in seen:
                    seen.add((folder, name))
                    found.append(Reference(node.id, node.type, folder, name, role))
    return found


def with_companions(refs: Iterable[Reference]) -> list[Reference]:
    """The references and, after each, the files its model loads from beside itself."""
    found = []
    for ref in refs:
        found.append(ref)
        folder, _, base = ref.name.rpartition("/")
        for companion in COMPANION_FILES.get(base, ()):
            name = f"{folder}/{companion}" if folder else companion
            found.append(Reference(ref.node_id, ref.node_type, ref.folder, name, ref.role))
    return found


@dataclass(frozen=True)
class CheckResult:
    present: list[Reference]
    missing_files: list[Reference]
    provided: list[str]
    missing_nodes: list[str]

    @property
    def ok(self) -> bool:
        return not self.missing_files and not self.missing_nodes


def check(nodes: list[Node], files: set[str], provided: set[str]) -> CheckResult:
    """``files``: model paths on the pod relative to the models dir; ``provided``: node types."""
    refs = with_companions(references(nodes))
    types = node_types(nodes)
    return CheckResult(
        present=[r for r in refs if r.path in files],
        missing_files=[r for r in refs if r.path not in files],
        provided=[t for t in types if t in provided],
        missing_nodes=[t for t in types if t not in provided],
    )


def node_class_names(source: str) -> set[str]:
    """The node types a Python file registers, read without running it: the keys of
    ``NODE_CLASS_MAPPINGS = {...}``, ``.update({...})``, ``[...] = ...``; of a
    ``NODE_CONFIG = {...}`` that a pack turns into its mappings (KJNodes); and the
    ``node_id="..."`` of ComfyUI's V3 schemas (``io.Schema(node_id=...)``)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names: set[str] = set()

    def is_mappings(node: ast.AST) -> bool:
        name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", "")
        return isinstance(name, str) and name.endswith(("NODE_CLASS_MAPPINGS", "NODE_CONFIG"))

    def keys(value: ast.AST | None) -> None:
        if isinstance(value, ast.Dict):
            names.update(
                k.value
                for k in value.keys
                if isinstance(k, ast.Constant) and isinstance(k.value, str)
            )

    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(is_mappings(t) for t in node.targets):
            keys(node.value)
        elif isinstance(node, ast.AnnAssign) and is_mappings(node.target):
            keys(node.value)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Subscript) and is_mappings(target.value):
                    key = target.slice
                    if isinstance(key, ast.Constant) and isinstance(key.value, str):
                        names.add(key.value)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "update"
            and is_mappings(node.func.value)
            and node.args
        ):
            keys(node.args[0])
        if isinstance(node, ast.Call):
            names.update(
                k.value.value
                for k in node.keywords
                if k.arg == "node_id"
                and isinstance(k.value, ast.Constant)
                and isinstance(k.value.value, str)
            )
    return names
