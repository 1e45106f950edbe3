"""ComfyUI and its custom nodes at pinned commits (data, no I/O).

The defaults are the real upstream commits recorded in shared/upstream/PINS.json (the newest
we could read). Users change or add nodes in group_data (``custom_nodes``); each node is
checked out at ``<comfyui_dir>/custom_nodes/<name>``.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, field_validator

from podforge.core.sources import check_url

_SHA = re.compile(r"^[0-9a-f]{40}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class RepoPin(BaseModel):
    """One git repository at one commit: ComfyUI itself or a custom node."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str  # directory name under custom_nodes/ (ComfyUI: its own dir)
    url: str
    commit: str  # the full 40-hex sha: `git fetch --depth 1 origin <sha>` needs all of it

    @field_validator("commit")
    @classmethod
    def _full_sha(cls, value: str) -> str:
        if not _SHA.match(value):
            raise ValueError(f"expected a full 40-hex commit sha, got {value!r}")
        return value

    @field_validator("url")
    @classmethod
    def _fetchable(cls, value: str) -> str:
        # git's own protocol serves public trees read-only (a mirror, the sandbox's daemon);
        # file:// is a checkout on the machine itself.
        return check_url(value, ("https", "git", "file"))

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"expected a plain directory name, got {value!r}")
        return value


COMFYUI = RepoPin(
    name="ComfyUI",
    url="https://github.com/Comfy-Org/ComfyUI",
    commit="a125cd84b054a57729b5eecab930ca9408719832",  # v0.3.64, 2025-10-12
)

DEFAULT_CUSTOM_NODES: tuple[RepoPin, ...] = (
    RepoPin(
        name="ComfyUI-GGUF",
        url="https://github.com/city96/ComfyUI-GGUF",
        commit="795e45156ece99afbc3efef911e63fcb46e6a20d",
    ),
    RepoPin(
        name="ComfyUI-WanVideoWrapper",
        url="https://github.com/kijai/ComfyUI-WanVideoWrapper",
        commit="088128b224242e110d3906c6750e9a3a348a659b",
    ),
    RepoPin(
        name="ComfyUI-VideoHelperSuite",
        url="https://github.com/Kosinkadink/ComfyUI-VideoHelperSuite",
        commit="4ee72c065db22c9d96c2427954dc69e7b908444b",
    ),
    RepoPin(
        name="comfyui_controlnet_aux",
        url="https://github.com/Fannovel16/comfyui_controlnet_aux",
        commit="e8b689a513c3e6b63edc44066560ca5919c0576e",
    ),
    RepoPin(
        name="ComfyUI-KJNodes",
        url="https://github.com/kijai/ComfyUI-KJNodes",
        # 2025-10-19: the newest that loads fully with ComfyUI 0.3.64 (3f200542 loses 15
        # node types, ImageConcatMulti among them: shared/upstream/PINS.json)
        commit="6ee278aa7d802c03ad713a7c5fbc02861b6773a8",
    ),
)

# Nodes a feature brings, whatever custom_nodes lists (a node listed there wins: its pin).
WAN_ANIMATE_PREPROCESS = RepoPin(
    name="ComfyUI-WanAnimatePreprocess",
    url="https://github.com/kijai/ComfyUI-WanAnimatePreprocess",
    commit="1a35b81a418bbba093356ad19b19bf2a76a24f4e",  # 2025-12-22
)
FEATURE_NODES: dict[str, tuple[RepoPin, ...]] = {
    # SteadyDancer's workflow detects poses with its OnnxDetectionModelLoader and friends.
    "steadydancer": (WAN_ANIMATE_PREPROCESS,),
}
