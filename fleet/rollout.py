"""Rollouts across a fleet: deploy.py over pyinfra's API, in batches, within a failure budget.

    python -m fleet rollout inventories/runpod.py --batch 5 --fail-percent 20
    python -m fleet rollout inventories/runpod.py --limit last_failed

Why a wrapper rather than a setting: pyinfra runs each operation on every host of a run
before the next one, so batching is a choice of which hosts a run includes, made before it
starts; nothing inside deploy.py can hold pods back for later. Each batch is one pyinfra
run (its parallelism and --limit semantics as they are) over the inventory loaded once
(RunPod's API is asked once). A failing pod does not stop its batch; once more pods failed
than the budget allows, no new batch starts and the rest are reported "not run".
"""

from __future__ import annotations

import argparse
import logging
import sys
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import click
import pyinfra
from pyinfra.api import Config, State
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.host import Host
from pyinfra.api.inventory import Inventory
from pyinfra.api.operations import run_ops
from pyinfra.api.output import set_echo
from pyinfra.api.state import StateStage
from pyinfra.context import ctx_config, ctx_inventory, ctx_state
from pyinfra_cli.inventory import make_inventory
from pyinfra_cli.log import setup_logging
from pyinfra_cli.util import load_deploy_file, parse_cli_arg

from fleet.report import RunCollector, show
from fleet.runs import PodRun, batches, budget_spent, failure_budget, is_failure

REPO = Path(__file__).resolve().parent.parent


def load_inventory(
    inventory: str, data: dict[str, Any] | None = None, cwd: Path = REPO
) -> Inventory:
    """The inventory as pyinfra's CLI loads it (group_data, then --data on top)."""
    loading = State()  # pyinfra reads inventory files with a state in its context
    loading.cwd = str(cwd)
    ctx_state.set(loading)
    return make_inventory(str(cwd / inventory), override_data=data or {}, cwd=str(cwd))


def select(inventory: Inventory, patterns: list[str] | None) -> list[Host]:
    """Hosts matching --limit patterns as pyinfra reads them (a group name, or a glob of
    host names), in inventory order; every host without patterns."""
    if not patterns:
        return list(inventory)
    chosen: set[Host] = set()
    for pattern in patterns:
        group = inventory.groups.get(pattern)
        matches = group if group is not None else [h for h in inventory if fnmatch(h.name, pattern)]
        if not matches and pattern != "last_failed":  # an empty last_failed: nothing left
            raise ValueError(f"--limit {pattern}: no group or host of that name in the inventory")
        chosen.update(matches)
    return [host for host in inventory if host in chosen]


def run_deploy(
    hosts: list[Host],
    collector: RunCollector,
    cwd: Path = REPO,
    parallel: int | None = None,
) -> tuple[State, str | None]:
    """One pyinfra run of deploy.py on ``hosts``; (its state, why it stopped early or None).

    Each run gets hosts of its own, made from the loaded ones' data (group data and
    overrides already merged): pyinfra's Host objects keep the operation order of the run
    they were in, so they cannot serve a second one.
    """
    set_echo(click.echo)
    state = State(check_for_changes=False)
    state.cwd = str(cwd)
    ctx_state.set(state)
    config = Config(CONNECT_TIMEOUT=10, PARALLEL=parallel or 0)
    ctx_config.set(config)
    inventory = Inventory(([(host.name, host.data.dict()) for host in hosts], {}))
    ctx_inventory.set(inventory)
    state.init(inventory, config)
    state.add_callback_handler(collector)
    stopped = None
    # As pyinfra's CLI runs deploy.py: an operation is known by where the recipe calls it.
    # pyinfra's API mode knows it by its count on each host instead, so pods whose plans
    # skip different operations would share one operation's name and place in the order.
    was_cli, pyinfra.is_cli = pyinfra.is_cli, True
    try:
        state.set_stage(StateStage.Connect)
        connect_all(state)
        state.set_stage(StateStage.Prepare)
        load_deploy_file(state, str(cwd / "deploy.py"))
        state.set_stage(StateStage.Execute)
        run_ops(state)
    except PyinfraError as error:
        # "No hosts remaining!" when every pod failed: the report says why for each.
        if not state.failed_hosts:
            raise
        stopped = str(error)
    finally:
        pyinfra.is_cli = was_cli
        state.set_stage(StateStage.Disconnect)
        disconnect_all(state)
    return state, stopped


def rollout(
    hosts: list[Host],
    batch_size: int | None = None,
    fail_percent: int | None = None,
    cwd: Path = REPO,
    parallel: int | None = None,
) -> list[PodRun]:
    """Deploy ``hosts`` batch by batch; the report's rows, also shown and written."""
    budget = failure_budget(len(hosts), fail_percent)
    runs: list[PodRun] = []
    planned = batches(hosts, batch_size)
    for number, batch in enumerate(planned, start=1):
        failed = sum(1 for run in runs if is_failure(run))
        if budget_spent(failed, budget):
            cause = (
                f"failure budget spent: {failed} of {len(hosts)} pods failed "
                f"(more than {fail_percent}%), so batch {number} did not start"
            )
            runs += [
                PodRun(pod=str(h.data.get("pod_name") or h.name), host=h.name, cause=cause)
                for h in batch
            ]
            continue
        if len(planned) > 1:
            names = ", ".join(host.name for host in batch)
            click.echo(f"--> Batch {number} of {len(planned)}: {names}", err=True)
        collector = RunCollector()
        try:
            state, stopped = run_deploy(batch, collector, cwd, parallel)
        finally:
            collector.close()
        runs += collector.runs(state, stopped)
    show(runs, cwd)
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fleet rollout",
        description="Deploy deploy.py to an inventory's pods in batches, with a failure budget.",
    )
    parser.add_argument("inventory", help="e.g. inventories/runpod.py")
    parser.add_argument("--batch", type=int, help="pods per batch (default: all at once)")
    parser.add_argument(
        "--fail-percent",
        type=int,
        help="start no new batch once more than this %% of the pods failed (0: any failure)",
    )
    parser.add_argument(
        "--limit",
        action="append",
        help="only hosts of this group or matching this glob (as pyinfra's --limit); "
        "last_failed = the pods the last run did not finish",
    )
    parser.add_argument("--data", action="append", default=[], help="key=value, as pyinfra's")
    parser.add_argument("--parallel", type=int, help="pods worked on at once within a batch")
    args = parser.parse_args(argv)
    # pyinfra's CLI output: each operation and each pod's result as the run goes.
    setup_logging(logging.INFO)
    data = {}
    for item in args.data:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--data {item}: expected key=value")
        data[key] = parse_cli_arg(value)
    try:
        inventory = load_inventory(args.inventory, data, Path.cwd())
        hosts = select(inventory, args.limit)
        if not hosts:
            print(f"rollout: no pods to deploy in {args.inventory} for --limit {args.limit}")
            return 0
        runs = rollout(hosts, args.batch, args.fail_percent, Path.cwd(), args.parallel)
    except (PyinfraError, ValueError) as error:
        print(f"rollout: {error}", file=sys.stderr)
        return 1
    return 0 if all(run.status == "ok" for run in runs) else 1
