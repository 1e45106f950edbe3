"""The one reader of a ComfyUI workflow: the UI's JSON (``nodes``, with the nodes of its
subgraphs in ``definitions.subgraphs``) or an API-format prompt (``{id: {class_type,
inputs}}``), into typed nodes. A stranger's file: every shape is checked, and a message names
the file and the node, never more than a short, escaped piece of a value. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from podforge.core.errors import PodforgeError

# API-format prompts name models in inputs; which folder each input lists.
INPUT_FOLDERS = {
    "ckpt_name": "checkpoints",
    "unet_name": "diffusion_models",
    "vae_name": "vae",
    "lora_name": "loras",
    "clip_name": "text_encoders",
    "clip_name1": "text_encoders",
    "clip_name2": "text_encoders",
    "control_net_name": "controlnet",
    "model_name": "upscale_models",
    "style_model_name": "style_models",
}

# Node types the ComfyUI frontend handles itself: no node pack provides them.
FRONTEND_ONLY = frozenset(
    {"Note", "MarkdownNote", "PrimitiveNode", "Reroute", "SetNode", "GetNode"}
)


class WorkflowError(PodforgeError, ValueError):
    """A workflow podforge cannot read; one line naming the file (and node)."""


@dataclass(frozen=True)
class ModelLink:
    """A model file a node names: by ``properties.models`` ({name, directory, url, hash}, as
    ComfyUI's templates give) or, in an API prompt, by a loader's input."""

    directory: str
    name: str
    url: str | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class Node:
    id: int | str
    type: str
    # The UI's widgets_values: the list itself, so that fitting a copy writes into it.
    widgets: list[Any] | None
    models: tuple[ModelLink, ...]
    pack: str | None  # properties.aux_id (a GitHub owner/repo) or cnr_id (a registry id)
    pack_is_repo: bool  # the pack is named by aux_id
    version: str | None  # properties.ver: a commit or a release of the pack

    @property
    def label(self) -> str:
        """``KSampler #3``: no control characters, short."""
        return f"{shown(self.type)} #{shown(self.id)}"


def shown(value: object) -> str:
    """A stranger's value as a label: no control characters, at most 60 characters."""
    text = re.sub(r"[\x00-\x1f\x7f]", "?", str(value))
    return text if len(text) <= 60 else text[:57] + "..."


def quoted(value: object) -> str:
    """A stranger's value in a message: quoted where it is text, short, escaped."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def is_api_prompt(workflow: Any) -> bool:
    return (
        isinstance(workflow, dict)
        and bool(workflow)
        and all(isinstance(v, dict) and "class_type" in v for v in workflow.values())
    )


def read_nodes(label: str, workflow: Any) -> list[Node]:
    """The workflow's nodes. WorkflowError naming ``label`` (the file) when it is neither
    format or a node's properties have another shape."""
    if is_api_prompt(workflow):
        return [_api_node(label, node_id, node) for node_id, node in workflow.items()]
    return [_ui_node(label, node) for node in _ui_nodes(label, workflow)]


def node_types(nodes: list[Node]) -> list[str]:
    """The node types ComfyUI or a node pack must provide, sorted."""
    return sorted({node.type for node in nodes} - FRONTEND_ONLY - {""})


def _ui_nodes(label: str, workflow: Any) -> list[dict[str, Any]]:
    if not isinstance(workflow, dict) or not isinstance(workflow.get("nodes"), list):
        raise WorkflowError(
            f"{label}: not a ComfyUI workflow (expected the UI's JSON with a 'nodes' list,"
            " or an API-format prompt)"
        )
    nodes = list(workflow["nodes"])
    definitions = workflow.get("definitions") or {}
    subgraphs = definitions.get("subgraphs") if isinstance(definitions, dict) else None
    if not isinstance(subgraphs, (list, type(None))):
        raise WorkflowError(f"{label}: definitions.subgraphs is not a list")
    for index, subgraph in enumerate(subgraphs or []):
        inner = subgraph.get("nodes") if isinstance(subgraph, dict) else None
        if not isinstance(inner, list):
            raise WorkflowError(f"{label}: subgraph {index} has no 'nodes' list")
        nodes += inner
    return [node for node in nodes if isinstance(node, dict)]


def _ui_node(label: str, node: dict[str, Any]) -> Node:
    node_type = node.get("type")
    node_id = node.get("id", "?")
    where = f"{shown(node_type if node_type is not None else '?')} #{shown(node_id)}"
    properties = node.get("properties") or {}
    if not isinstance(properties, dict):
        raise WorkflowError(f"{label}: {where}: 'properties' is not an object")
    models = properties.get("models") or []
    if not isinstance(models, list):
        raise WorkflowError(f"{label}: {where}: properties.models is not a list")
    links = []
    for index, model in enumerate(models):
        fields = ("name", "directory", "url", "hash", "hash_type")
        if not isinstance(model, dict) or any(
            not isinstance(model.get(key), (str, type(None))) for key in fields
        ):
            raise WorkflowError(
                f"{label}: {where}: properties.models[{index}]: expected an object"
                " whose name, directory, url and hash are strings"
            )
        if not (model.get("name") and model.get("directory")):
            raise WorkflowError(f"{label}: {where}: a model without name or directory")
        sha256 = model.get("hash") if (model.get("hash_type") or "").upper() == "SHA256" else None
        links.append(ModelLink(model["directory"], model["name"], model.get("url"), sha256))
    pack = properties.get("aux_id") or properties.get("cnr_id")
    version = properties.get("ver")
    widgets = node.get("widgets_values")
    return Node(
        id=node_id if isinstance(node_id, (int, str)) else shown(node_id),
        type=node_type if isinstance(node_type, str) else "",
        widgets=widgets if isinstance(widgets, list) else None,
        models=tuple(links),
        pack=pack if isinstance(pack, str) and pack else None,
        pack_is_repo=bool(properties.get("aux_id")),
        version=version if isinstance(version, str) else None,
    )


def _api_node(label: str, node_id: str, node: dict[str, Any]) -> Node:
    node_type = node["class_type"]
    inputs = node.get("inputs") or {}
    if not isinstance(inputs, dict):
        where = f"{shown(node_type)} #{shown(node_id)}"
        raise WorkflowError(f"{label}: {where}: 'inputs' is not an object")
    links = tuple(
        ModelLink(INPUT_FOLDERS[key], value)
        for key, value in inputs.items()
        if key in INPUT_FOLDERS and isinstance(value, str) and "." in value
    )
    return Node(
        id=node_id,
        type=node_type if isinstance(node_type, str) else "",
        widgets=None,
        models=links,
        pack=None,
        pack_is_repo=False,
        version=None,
    )
