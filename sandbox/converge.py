"""Run deploy.py against an inventory through pyinfra's API and report per-host results.

What the pyinfra CLI does, minus its progress display (fleet.rollout's runner), so tests
assert on pyinfra's own results (operation metadata, failed hosts) rather than on log text.
Output that operations stream on purpose (the model fetcher's lines) is echoed to stderr as
the CLI does.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from pyinfra.api import State

from fleet.report import RunCollector
from fleet.rollout import load_inventory, run_deploy

REPO = Path(__file__).resolve().parent.parent


@dataclass
class HostResult:
    name: str
    failed: bool
    changed: list[str] = field(default_factory=list)  # names of operations that changed
    unchanged: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # ran and failed
    not_run: list[str] = field(default_factory=list)  # after a failure: never ran


def converge(
    inventory: str = "inventories/sandbox.py", data: dict[str, object] | None = None
) -> dict[str, HostResult]:
    """Deploy once (one pyinfra run, as fleet.rollout runs a batch); results by host name."""
    hosts = load_inventory(inventory, data, REPO)
    collector = RunCollector()
    try:
        state, _ = run_deploy(list(hosts), collector, REPO)
    finally:
        collector.close()
    return _results(state)


def converge_pods(
    pods: dict[str, dict[str, object]], workdir: Path, data: dict[str, object] | None = None
) -> dict[str, HostResult]:
    """Deploy to some pods only, each with host data of its own: {pod name: data}."""
    source = (
        "import json\n"
        "from sandbox.control import load_state, pod_hosts\n"
        f"_extra = json.loads({json.dumps(json.dumps(pods))})\n"
        "sandbox = [(address, {**host_data, **_extra[host_data['pod_name']]})\n"
        "           for address, host_data in pod_hosts(load_state())\n"
        "           if host_data['pod_name'] in _extra]\n"
    )
    # Named by content: pyinfra keeps each file's compiled code by name for the process.
    digest = hashlib.sha1(source.encode()).hexdigest()[:12]
    inventory = workdir / f"inventory-{'-'.join(sorted(pods))}-{digest}.py"
    inventory.write_text(source)
    return converge(str(inventory), data)


def _results(state: State) -> dict[str, HostResult]:
    results = {}
    for host in state.inventory:
        result = HostResult(name=host.name, failed=host in state.failed_hosts)
        for op_hash in state.get_op_order():
            if op_hash not in state.ops[host]:
                continue
            meta = state.ops[host][op_hash].operation_meta
            name = ", ".join(sorted(state.op_meta[op_hash].names))
            if not meta.is_complete():
                result.not_run.append(name)
            elif not meta.did_succeed():
                result.errors.append(name)
            elif meta.did_change():
                result.changed.append(name)
            else:
                result.unchanged.append(name)
        results[host.name] = result
    return results
