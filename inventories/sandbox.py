"""The running sandbox's pods (python -m sandbox up), as pyinfra hosts of group `sandbox`.

pyinfra inventories/sandbox.py deploy.py
"""

from sandbox.control import load_state, pod_hosts

sandbox = pod_hosts(load_state())
