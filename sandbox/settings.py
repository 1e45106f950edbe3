"""What every sandbox pod is told, deployed over SSH (its host data, control.pod_hosts) or
built into an image (sandbox/image.py): models from the local hub, outputs to the local S3,
ComfyUI and its nodes from the sandbox's git daemon, flash-attn as a stand-in, ComfyUI on
the CPU.
"""

from __future__ import annotations

from typing import Any

from podforge.core.pins import DEFAULT_CUSTOM_NODES, FEATURE_NODES, RepoPin
from sandbox.wheels import POD_RELEASES

SANDBOX_NODES = [
    *DEFAULT_CUSTOM_NODES,
    *(node for nodes in FEATURE_NODES.values() for node in nodes),
]


# What every sandbox pod is told beside where its services are: these decide its plan.
SANDBOX_FEATURES: dict[str, Any] = {
    # Outputs to the sandbox S3 (behind its R2-rules gate).
    "enable_r2_sync": True,
    # Features whose files depend on the GPU, so the demo pods get different plans.
    "enable_wan22": True,
    "enable_dwpose": True,
    # No GPU here (nvidia-smi is a recording): ComfyUI runs on the CPU with PyPI's torch.
    # The plan still decides per recorded GPU; its VRAM flags give way to --cpu.
    "comfyui_args": ["--cpu"],
    # The hub serves small stand-ins, not the real multi-GB files: sizes come from the hub.
    "verify_catalog_sizes": False,
}


def sandbox_settings(state: dict[str, Any]) -> dict[str, Any]:
    repos = state["git"]["repos"]

    def pin(name: str) -> RepoPin:
        # The same repositories as the defaults, served locally at the sandbox's own commits.
        return RepoPin(name=name, url=repos[name]["url"], commit=repos[name]["commits"][-1])

    return {
        "hf_endpoint": state["hub"]["url"],
        # The hub stands in for CivitAI too, with a token of its own.
        "civitai_endpoint": state["hub"]["url"],
        "civitai_token": state["hub"]["civitai_token"],
        "r2_endpoint": state["s3"]["url"],
        "r2_bucket": state["s3"]["bucket"],
        "r2_access_key_id": state["s3"]["access_key"],
        "r2_secret_access_key": state["s3"]["secret_key"],
        "comfyui_repo": pin("ComfyUI"),
        # Every node the sandbox's git serves, the features' nodes too: any feature works.
        "custom_nodes": [pin(node.name) for node in SANDBOX_NODES],
        # flash-attn's release wheel, from a file:// mirror holding a stand-in (no GitHub here).
        "flash_attn_mirror": f"file://{POD_RELEASES}",
        # The stand-ins' own hashes (the real release assets' are podforge's: stacks.py).
        "flash_attn_sha256": state["standins"],
        **SANDBOX_FEATURES,
    }
