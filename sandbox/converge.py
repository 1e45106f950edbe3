"""Run deploy.py against an inventory through pyinfra's API and report per-host results.

What the pyinfra CLI does, minus its progress display, so tests assert on pyinfra's own
results (operation metadata, failed hosts) rather than on log text. Output that operations
stream on purpose (the model fetcher's lines) is echoed to stderr as the CLI does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import click
from pyinfra.api import Config, State
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.operations import run_ops
from pyinfra.api.output import set_echo
from pyinfra.context import ctx_config, ctx_inventory, ctx_state
from pyinfra_cli.inventory import make_inventory
from pyinfra_cli.util import load_deploy_file

REPO = Path(__file__).resolve().parent.parent


@dataclass
class HostResult:
    name: str
    failed: bool
    changed: list[str] = field(default_factory=list)  # names of operations that changed
    unchanged: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def converge(
    inventory: str = "inventories/sandbox.py", data: dict[str, object] | None = None
) -> dict[str, HostResult]:
    """Deploy once; results keyed by host name (the pod's address)."""
    set_echo(click.echo)
    state = State(check_for_changes=False)
    state.cwd = str(REPO)
    ctx_state.set(state)
    config = Config(CONNECT_TIMEOUT=5)
    ctx_config.set(config)
    hosts = make_inventory(str(REPO / inventory), override_data=data, cwd=str(REPO))
    ctx_inventory.set(hosts)
    state.init(hosts, config)
    try:
        connect_all(state)
        load_deploy_file(state, str(REPO / "deploy.py"))
        run_ops(state)
    except PyinfraError as error:
        # "No hosts remaining!" when every host failed: the per-host results say why.
        if not state.failed_hosts:
            raise
        state.last_error = error  # type: ignore[attr-defined]
    finally:
        disconnect_all(state)
    return _results(state)


def converge_pods(
    pods: dict[str, dict[str, object]], workdir: Path, data: dict[str, object] | None = None
) -> dict[str, HostResult]:
    """Deploy to some pods only, each with host data of its own: {pod name: data}."""
    inventory = workdir / f"inventory-{'-'.join(sorted(pods))}.py"
    inventory.write_text(
        "import json\n"
        "from sandbox.control import load_state, pod_hosts\n"
        f"_extra = json.loads({json.dumps(json.dumps(pods))})\n"
        "sandbox = [(address, {**host_data, **_extra[host_data['pod_name']]})\n"
        "           for address, host_data in pod_hosts(load_state())\n"
        "           if host_data['pod_name'] in _extra]\n"
    )
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
            if not meta.did_succeed(_raise_if_not_complete=False):
                result.errors.append(name)
            elif meta.did_change():
                result.changed.append(name)
            else:
                result.unchanged.append(name)
        results[host.name] = result
    return results
