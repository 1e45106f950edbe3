"""The running sandbox's pods (python -m sandbox up), as pyinfra hosts of group `sandbox`.

pyinfra inventories/sandbox.py deploy.py
pyinfra inventories/sandbox.py deploy.py --limit last_failed   # what the last run left

Group `last_failed`: the pods the last rollout's report (.podforge/last-run.json) did not
see finish, and SSH keepalives, as in inventories/runpod.py.
"""

from fleet import ssh
from fleet.runs import REPORT_PATH, failed_hosts
from sandbox.control import load_state, pod_hosts

_ssh_config = ssh.config_file()
sandbox = [
    (name, {"ssh_config_file": _ssh_config, **data}) for name, data in pod_hosts(load_state())
]
_failed = set(failed_hosts(REPORT_PATH))
last_failed = [(name, data) for name, data in sandbox if name in _failed]
