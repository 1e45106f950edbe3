# Sandbox pods (inventories/sandbox.py): what they are told is in sandbox/settings.py, shared
# with the sandbox's image builds.
from sandbox.control import load_state, state_path
from sandbox.settings import sandbox_settings

# pyinfra reads every group_data file whatever the inventory; without a running sandbox the
# group has no hosts (inventories/sandbox.py says so), so there is nothing to point at.
if state_path().exists():
    globals().update(sandbox_settings(load_state()))
