# Sandbox pods (inventories/sandbox.py): models from the local hub, outputs to the local S3,
# ComfyUI and its nodes from the sandbox's git daemon, the torch family as stand-ins.
from podforge.pins import DEFAULT_CUSTOM_NODES, RepoPin
from sandbox.control import load_state, state_path
from sandbox.wheels import POD_RELEASES

# pyinfra reads every group_data file whatever the inventory; without a running sandbox the
# group has no hosts (inventories/sandbox.py says so), so there is nothing to point at.
if state_path().exists():
    _state = load_state()
    hf_endpoint = _state["hub"]["url"]
    r2_endpoint = _state["s3"]["url"]
    r2_bucket = _state["s3"]["bucket"]
    r2_access_key_id = _state["s3"]["access_key"]
    r2_secret_access_key = _state["s3"]["secret_key"]
    # The same repositories as the defaults, served locally at the sandbox's own commits.
    _repos = _state["git"]["repos"]

    def _pin(name: str) -> RepoPin:
        return RepoPin(name=name, url=_repos[name]["url"], commit=_repos[name]["commits"][-1])

    comfyui_repo = _pin("ComfyUI")
    custom_nodes = [_pin(node.name) for node in DEFAULT_CUSTOM_NODES]

# flash-attn's release wheel, from a file:// mirror holding a stand-in (no GitHub here).
flash_attn_mirror = f"file://{POD_RELEASES}"
# Outputs to the sandbox S3 (behind its R2-rules gate).
enable_r2_sync = True
# Features whose files depend on the GPU, so the two demo pods get different plans.
enable_wan22 = True
enable_dwpose = True
# The hub serves small stand-ins, not the real multi-GB files: sizes come from the hub.
verify_catalog_sizes = False
