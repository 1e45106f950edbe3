"""RunPod pods as pyinfra hosts of group `runpod`: from RunPod's API, or a static pods file.

    RUNPOD_API_KEY=... pyinfra inventories/runpod.py deploy.py
    RUNPOD_API_KEY=... RUNPOD_POD_FILTER='wan-*' pyinfra inventories/runpod.py deploy.py
    PODFORGE_PODS_FILE=pods.json pyinfra inventories/runpod.py deploy.py   # without a key

With RUNPOD_API_KEY, every RUNNING pod of the account with full SSH (fleet/runpod.py
says which are skipped and why); RUNPOD_API_URL overrides the API's base URL, RUNPOD_SSH_KEY
names the private key to log in with. Host names are pod names.

pods.json: [{"name": "pod-a", "host": "203.0.113.7", "port": 22077}, ...] - each pod's
public IP and the public port mapped to its port 22 ("full SSH": RunPod's basic SSH proxy
has neither SFTP nor SCP, which pyinfra needs).

Group `last_failed`: the pods that failed in the last rollout's report
(.podforge/last-run.json, written by `python -m fleet rollout`), so `--limit last_failed`
reruns only those. Every pod gets SSH keepalives (fleet/ssh.py), unless its data names an
`ssh_config_file` of its own.
"""

import json
import os
from pathlib import Path

from pyinfra import logger
from pyinfra.api.exceptions import InventoryError

from fleet import ssh
from fleet.runpod import (
    DEFAULT_API_URL,
    RunPodApiError,
    deployable_pods,
    host_names,
    list_pods,
)
from fleet.runs import REPORT_PATH, failed_hosts
from podforge.secrets import SecretFileError, secret


def _from_api(api_key: str) -> list[tuple[str, dict]]:
    try:
        body = list_pods(os.environ.get("RUNPOD_API_URL", DEFAULT_API_URL), api_key)
        pods, skipped = deployable_pods(body, os.environ.get("RUNPOD_POD_FILTER"))
    except RunPodApiError as error:
        raise InventoryError(str(error)) from None
    for line in skipped:
        logger.warning(f"--> RunPod: {line}")
    ssh_key = os.environ.get("RUNPOD_SSH_KEY")
    return [
        (name, {**pod.host_data(), **({"ssh_key": ssh_key} if ssh_key else {})})
        for name, pod in zip(host_names(pods), pods, strict=True)
    ]


def _from_file() -> list[tuple[str, dict]]:
    pods_file = Path(os.environ.get("PODFORGE_PODS_FILE", "pods.json"))
    if not pods_file.exists():
        raise InventoryError(
            f"{pods_file} not found: set RUNPOD_API_KEY to list your pods from RunPod's API, "
            "or list them in a pods file (see inventories/runpod.py) and set PODFORGE_PODS_FILE"
        )
    return [
        (
            pod["name"],
            {
                "ssh_hostname": pod["host"],
                "ssh_port": int(pod["port"]),
                "ssh_user": pod.get("user", "root"),
                "pod_name": pod["name"],
                **({"ssh_key": pod["ssh_key"]} if "ssh_key" in pod else {}),
            },
        )
        for pod in json.loads(pods_file.read_text())
    ]


def _api_key() -> str | None:
    """RUNPOD_API_KEY, or the 0600 file RUNPOD_API_KEY_FILE names."""
    try:
        return secret("RUNPOD_API_KEY", os.environ)
    except SecretFileError as error:
        raise InventoryError(str(error)) from None


_key = _api_key()
_ssh_config = ssh.config_file()
runpod = [
    (name, {"ssh_config_file": _ssh_config, **data})
    for name, data in (_from_api(_key) if _key else _from_file())
]
_failed = set(failed_hosts(REPORT_PATH))
last_failed = [(name, data) for name, data in runpod if name in _failed]
