"""RunPod pods from a static pods file (the RunPod API comes later), as group `runpod`.

    PODFORGE_PODS_FILE=pods.json pyinfra inventories/runpod.py deploy.py

pods.json: [{"name": "pod-a", "host": "203.0.113.7", "port": 22077}, ...] - each pod's
public IP and the public port mapped to its port 22 ("full SSH": RunPod's basic SSH proxy
has neither SFTP nor SCP, which pyinfra needs).
"""

import json
import os
from pathlib import Path

from pyinfra.api.exceptions import InventoryError

_pods_file = Path(os.environ.get("PODFORGE_PODS_FILE", "pods.json"))
if not _pods_file.exists():
    raise InventoryError(
        f"{_pods_file} not found: list your pods there (see inventories/runpod.py) "
        "or set PODFORGE_PODS_FILE"
    )

runpod = [
    (
        pod["host"],
        {
            "ssh_port": int(pod["port"]),
            "ssh_user": pod.get("user", "root"),
            "pod_name": pod["name"],
            **({"ssh_key": pod["ssh_key"]} if "ssh_key" in pod else {}),
        },
    )
    for pod in json.loads(_pods_file.read_text())
]
