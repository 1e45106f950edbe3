# Sandbox pods (inventories/sandbox.py): models from the local hub, outputs to the local S3.
from sandbox.control import load_state, state_path

# pyinfra reads every group_data file whatever the inventory; without a running sandbox the
# group has no hosts (inventories/sandbox.py says so), so there is nothing to point at.
if state_path().exists():
    _state = load_state()
    hf_endpoint = _state["hub"]["url"]
    r2_endpoint = _state["s3"]["url"]
    r2_bucket = _state["s3"]["bucket"]

# The CUDA wheels are gigabytes and there is no GPU: the sandbox skips the ML stack.
install_python_stack = False
# Features whose files depend on the GPU, so the two demo pods get different plans.
enable_wan22 = True
enable_dwpose = True
# The hub serves small stand-ins, not the real multi-GB files: sizes come from the hub.
verify_catalog_sizes = False
