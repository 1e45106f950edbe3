"""The running sandbox's pods (python -m sandbox up), as pyinfra hosts of group `sandbox`.

pyinfra inventories/sandbox.py deploy.py
pyinfra inventories/sandbox.py deploy.py --limit last_failed   # what the last run left

Group `last_failed`: the pods the last run's report (.podforge/last-run.json) did not see
finish, as in inventories/runpod.py.
"""

from podforge.rollout import REPORT_PATH, failed_hosts
from sandbox.control import load_state, pod_hosts

sandbox = pod_hosts(load_state())
_failed = set(failed_hosts(REPORT_PATH))
last_failed = [(name, data) for name, data in sandbox if name in _failed]
