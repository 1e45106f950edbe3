"""The running sandbox's pods (python -m sandbox up), as pyinfra hosts of group `sandbox`.

pyinfra inventories/sandbox.py deploy.py
"""

from sandbox.control import load_state

_state = load_state()

sandbox = [
    (
        pod["address"],
        {
            "ssh_port": pod["port"],
            "ssh_user": "root",
            "ssh_key": _state["ssh_key"],
            # Sandbox pods share one throwaway host key; nothing to pin.
            "ssh_known_hosts_file": "/dev/null",
            "ssh_strict_host_key_checking": "no",
            "pod_name": pod["name"],
            "gpu_profile": pod["gpu"],
        },
    )
    for pod in _state["pods"]
]
