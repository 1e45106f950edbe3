"""An upstream example workflow fitted to a pod: which widgets name a model file or choose a
precision, rewritten to the files its plan fetched and to what its stack runs; what the
deploy asks the pod to fit (``install_request``) and how it reads back what is there.
Pure: ``podforge workflows install`` (``pod``) reads and writes the files.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from packaging.version import Version

from podforge.core.catalog import CATALOG
from podforge.core.stacks import STACK_PROFILES
from podforge.workflows.graph import read_nodes

if TYPE_CHECKING:
    from podforge.core.config import Settings
    from podforge.core.plan import Plan

# ComfyUI's user workflows, relative to its dir: what the UI's Workflows panel lists.
USER_WORKFLOWS = "user/default/workflows"
# How the fitted files are named (FeatureWorkflow.name), apart from the user's own there.
FITTED_PREFIX, FITTED_SUFFIX = "podforge-", ".json"


@dataclass(frozen=True)
class FeatureWorkflow:
    """An upstream example a feature's workflow is fitted from."""

    node: str  # the custom node (checkout name) that ships it
    example: str  # its path in that checkout
    name: str  # the fitted file's name in USER_WORKFLOWS

    def __post_init__(self) -> None:
        if not (self.name.startswith(FITTED_PREFIX) and self.name.endswith(FITTED_SUFFIX)):
            raise ValueError(
                f"{self.name}: fitted workflows are named {FITTED_PREFIX}*{FITTED_SUFFIX}"
            )


def user_workflows_list(podforge_dir: str) -> str:
    """Where the deploy lists the user's workflows it installed (setting ``workflows``)."""
    return f"{podforge_dir}/user-workflows.json"


def user_pattern(comfyui_dir: str) -> str:
    """Every workflow file in the UI's folder: the deploy asks for the digests of those it
    installs (the user's own, as they are)."""
    return f"{comfyui_dir}/{USER_WORKFLOWS}/*{FITTED_SUFFIX}"


def fitted_pattern(comfyui_dir: str) -> str:
    """The fitted workflows' files: the deploy asks the pod-state fact for their digests."""
    return f"{comfyui_dir}/{USER_WORKFLOWS}/{FITTED_PREFIX}*{FITTED_SUFFIX}"


def fitted_state(
    stamp: dict[str, Any] | None, digests: dict[str, dict[str, str]]
) -> dict[str, Any] | None:
    """The workflows stamp (request digest, file -> sha1 as written) with each file's sha1
    now, from ``digests`` (state.digests' files of ``fitted_pattern``; None: gone); None when
    no workflows were installed."""
    if stamp is None:
        return None
    files = stamp.get("files", {})
    return {**stamp, "current": {path: digests.get(path, {}).get("sha1") for path in files}}


FEATURE_WORKFLOWS: dict[str, FeatureWorkflow] = {
    "steadydancer": FeatureWorkflow(
        node="ComfyUI-WanVideoWrapper",
        example="example_workflows/wanvideo_2_1_14B_SteadyDancer_pose_control_example_01.json",
        name="podforge-steadydancer.json",
    ),
}


@dataclass(frozen=True)
class ModelWidget:
    index: int  # position in the node's widgets_values
    folder: str  # the ComfyUI model folder the widget lists
    role: str  # which catalog file fills it (CatalogFile.role)


# Node types whose widgets name model files. Names are relative to the folder; the UI writes
# subfolders with the separator of the machine that saved it (kijai's: backslashes).
MODEL_WIDGETS: dict[str, tuple[ModelWidget, ...]] = {
    # kijai/ComfyUI-WanVideoWrapper
    "WanVideoModelLoader": (ModelWidget(0, "diffusion_models", "diffusion_model"),),
    "WanVideoVAELoader": (ModelWidget(0, "vae", "wanvideo_vae"),),
    "WanVideoTextEncodeCached": (ModelWidget(0, "text_encoders", "wanvideo_text_encoder"),),
    "LoadWanVideoT5TextEncoder": (ModelWidget(0, "text_encoders", "wanvideo_text_encoder"),),
    "WanVideoLoraSelect": (ModelWidget(0, "loras", "lora"),),
    # kijai/ComfyUI-WanAnimatePreprocess
    "OnnxDetectionModelLoader": (
        ModelWidget(0, "detection", "pose_model"),
        ModelWidget(1, "detection", "detector"),
    ),
    # city96/ComfyUI-GGUF
    "UnetLoaderGGUF": (ModelWidget(0, "diffusion_models", "diffusion_model"),),
    # ComfyUI
    "CLIPVisionLoader": (ModelWidget(0, "clip_vision", "clip_vision"),),
    "UNETLoader": (ModelWidget(0, "diffusion_models", "diffusion_model"),),
    "VAELoader": (ModelWidget(0, "vae", "vae"),),
    "CLIPLoader": (ModelWidget(0, "text_encoders", "text_encoder"),),
    "LoraLoaderModelOnly": (ModelWidget(0, "loras", "lora"),),
}

# The folder each role's files live in (one per role, whichever loader lists it).
ROLE_FOLDERS: dict[str, str] = {w.role: w.folder for ws in MODEL_WIDGETS.values() for w in ws}

# Widgets that choose a precision or an attention kernel, by what they choose.
STACK_WIDGETS: dict[str, dict[int, str]] = {
    "WanVideoModelLoader": {1: "base_precision", 4: "attention_mode"},
    "WanVideoVAELoader": {1: "precision"},
    "WanVideoTextEncodeCached": {1: "precision"},
}


@dataclass(frozen=True)
class StackAbilities:
    """What the pod's environment can run (from its stack profile and request)."""

    torch: Version
    sageattention: bool

    @classmethod
    def of_profile(cls, profile: str) -> StackAbilities:
        # No profile installs sageattention (SageAttention 2 is built from source per GPU
        # architecture): workflows get sdpa until one does.
        return cls(torch=Version(STACK_PROFILES[profile].torch), sageattention=False)

    def choice(self, what: str) -> str:
        if what == "base_precision":
            # fp16_fast is fp16 with fp16 accumulation: torch >= 2.7 only.
            return "fp16_fast" if self.torch >= Version("2.7") else "bf16"
        if what == "attention_mode":
            return "sageattn" if self.sageattention else "sdpa"
        return "bf16"


@dataclass(frozen=True)
class Change:
    node_id: int | str
    node_type: str
    index: int
    old: Any
    new: Any


def files_by_role(models: Iterable[Any], models_dir: str, feature: str) -> dict[str, str]:
    """role -> the name a loader widget lists, for the planned models (PlannedModel: its
    repo, path and absolute dest) that the catalog gives a role in ``feature``."""
    roles = {(f.repo, f.path): f.role for f in CATALOG if f.role and f.feature == feature}
    found = {}
    for model in models:
        role = roles.get((model.repo, model.path))
        if role is None:
            continue
        relative = model.dest.removeprefix(models_dir.rstrip("/") + "/")
        found[role] = relative.removeprefix(ROLE_FOLDERS[role] + "/")
    return found


def fit(
    workflow: Mapping[str, Any], files: Mapping[str, str], stack: StackAbilities
) -> tuple[dict[str, Any], list[Change]]:
    """A copy of ``workflow`` for this pod: each model widget names the file of its role
    (``files``: role -> name relative to the widget's folder, from the plan), each precision
    and attention widget what the stack runs. Widgets whose role the plan has no file for
    are left as they are (the check names them)."""
    fitted = copy.deepcopy(dict(workflow))
    changes = []
    for node in read_nodes("the example", fitted):
        if node.widgets is None:
            continue
        values = node.widgets
        wanted: dict[int, Any] = {}
        for widget in MODEL_WIDGETS.get(node.type, ()):
            if widget.role in files:
                wanted[widget.index] = files[widget.role]
        for index, what in STACK_WIDGETS.get(node.type, {}).items():
            wanted[index] = stack.choice(what)
        for index, value in sorted(wanted.items()):
            if index < len(values) and values[index] != value:
                changes.append(Change(node.id, node.type, index, values[index], value))
                values[index] = value
    return fitted, changes


def install_request(settings: Settings, plan: Plan) -> dict[str, Any]:
    """What `podforge workflows install` writes on the pod: for each enabled feature with an
    upstream example, where the example is, where its fitted copy goes and which planned
    file fills each role; and what the stack runs. Raises ValueError naming a feature whose
    example's node is not checked out."""
    checkouts = {pin.name: dest for dest, pin in settings.checkouts().items()}
    wanted = []
    for feature, workflow in FEATURE_WORKFLOWS.items():
        if not getattr(settings, f"enable_{feature}"):
            continue
        if workflow.node not in checkouts:
            raise ValueError(
                f"enable_{feature}: its workflow comes from {workflow.node}, which custom_nodes"
                f" does not list: add it back or turn enable_{feature} off"
            )
        wanted.append(
            {
                "feature": feature,
                "example": f"{checkouts[workflow.node]}/{workflow.example}",
                "dest": f"{settings.comfyui_dir}/{USER_WORKFLOWS}/{workflow.name}",
                "files": files_by_role(plan.models, settings.models_dir, feature),
            }
        )
    stack = StackAbilities.of_profile(plan.python_stack.profile)
    return {
        "stack": {"torch": str(stack.torch), "sageattention": stack.sageattention},
        "workflows": wanted,
    }
