"""The per-pod report of a rollout, gathered from pyinfra's own state as the run goes.

``fleet.rollout`` registers a ``RunCollector`` on each batch's state: it times each pod's
operations and keeps the last error line pyinfra logs for it, so a failure gets its cause
in one line; what the plan chose and the fetch brought come from what the tasks kept
(``tasks.desired.PLANS``, ``tasks.models.FETCHES``). deploy.py knows nothing of it, and
nothing here reaches a pod.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
from paramiko import SSHException
from pyinfra.api import State
from pyinfra.api.host import Host
from pyinfra.api.state import BaseStateCallback
from pyinfra.connectors.ssh import SSHConnector

from fleet.runs import REPORT_PATH, PodRun, render_table, write_report
from tasks.desired import PLANS
from tasks.models import FETCHES

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_PREFIXED = re.compile(r"^\[(?P<host>[^\]]+)\]\s+(?:nested\s+)?(?P<message>.*\S)\s*$")
# pyinfra's own summary lines: they say that an operation failed, never why.
_GENERIC = re.compile(r"^(Error(: executed \d+ commands.*)?|Error in nested operation)$")


@dataclass
class _Pod:
    # From when the run first dealt with the pod (connecting, or reading its facts).
    began: float = field(default_factory=time.monotonic)
    ended: float | None = None
    connect_error: str | None = None
    last_error: str | None = None


class _ErrorLines(logging.Handler):
    """Keeps, per host, the last line pyinfra logged about something going wrong there."""

    def __init__(self, pods: dict[str, _Pod]) -> None:
        super().__init__(logging.WARNING)
        self.pods = pods

    def emit(self, record: logging.LogRecord) -> None:
        match = _PREFIXED.match(_ANSI.sub("", record.getMessage()))
        if not match:
            return
        message = match["message"]
        if record.levelno < logging.ERROR and not message.startswith("Unexpected error"):
            return  # warnings (the plan's, say) are not why a pod failed
        if not _GENERIC.match(message):
            self.pods.setdefault(match["host"], _Pod()).last_error = message


class RunCollector(BaseStateCallback):
    """Per-pod timings, plan summary and failure causes of one or more pyinfra runs."""

    def __init__(self) -> None:
        self.pods: dict[str, _Pod] = {}
        self.handler = _ErrorLines(self.pods)
        logging.getLogger("pyinfra").addHandler(self.handler)

    def close(self) -> None:
        logging.getLogger("pyinfra").removeHandler(self.handler)

    def record(self, host: Host) -> _Pod:
        """This pod's record, made when the run first deals with it."""
        return self.pods.setdefault(host.name, _Pod())

    # pyinfra's callbacks (static in BaseStateCallback; bound here to keep the records)
    def host_connect_error(self, state: State, host: Host, error: object) -> None:  # type: ignore[override]
        self.record(host).connect_error = str(error)

    def host_before_connect(self, state: State, host: Host) -> None:  # type: ignore[override]
        self.record(host)

    def operation_host_success(  # type: ignore[override]
        self, state: State, host: Host, op_hash: str, retry_count: int = 0
    ) -> None:
        self.record(host).ended = time.monotonic()

    def operation_host_error(  # type: ignore[override]
        self, state: State, host: Host, op_hash: str, retry_count: int = 0, max_retries: int = 0
    ) -> None:
        pod = self.record(host)
        pod.ended = time.monotonic()
        if _connection_lost(host):
            # Whatever the command printed last, the pod went away under it.
            pod.last_error = "the SSH connection to the pod was lost"

    def runs(self, state: State, stopped: str | None = None) -> list[PodRun]:
        """One row per pod in this run's limit; ``stopped``: why the run ended early, if so."""
        rows = []
        for pod_host in state.inventory:
            if not state.is_host_in_limit(pod_host):
                continue
            pod = self.record(pod_host)
            plan, fetch = PLANS.get(pod_host.name), FETCHES.get(pod_host.name)
            ops = [h for h in state.get_op_order() if h in state.ops[pod_host]]
            metas = [state.ops[pod_host][h].operation_meta for h in ops]
            done = [m for m in metas if m.is_complete()]
            failed_op = next(
                (
                    h
                    for h, m in zip(ops, metas, strict=True)
                    if m.is_complete() and not m.did_succeed()
                ),
                None,
            )
            gpus = plan.gpus if plan else ()
            run = PodRun(
                pod=str(pod_host.data.get("pod_name") or pod_host.name),
                host=pod_host.name,
                gpu=(
                    gpus[0].name + (f" x{len(gpus)}" if len(gpus) > 1 else "")
                    if gpus
                    else pod_host.data.get("runpod_gpu_type")
                ),
                tier=plan.tier if plan else None,
                stack=plan.stack if plan else None,
                variants=dict(plan.variants) if plan else {},
                changed=sum(1 for m in done if m.did_succeed() and m.did_change()),
                duration_s=round((pod.ended or pod.began) - pod.began, 1),
                status="ok",
            )
            if fetch is not None and fetch.fetched_bytes is not None:
                run.gb_fetched = round(fetch.fetched_bytes / 1e9, 6)
            if pod.connect_error is not None and not done:
                run.status, run.cause = "unreachable", f"cannot connect: {pod.connect_error}"
            elif failed_op is not None or pod_host in state.failed_hosts:
                name = ", ".join(state.get_op_meta(failed_op).names) if failed_op else "deploy"
                run.status = "failed"
                run.cause = f"{name}: {pod.last_error or 'failed (see the log above)'}"
            elif len(done) < len(metas):
                run.status = "failed"
                run.cause = (
                    f"stopped after {len(done)} of {len(metas)} operations: "
                    f"{stopped or 'the run ended early'}"
                )
            rows.append(run)
        return rows


def _connection_lost(host: Host) -> bool:
    """Whether the pod's SSH connection is gone: asked by opening a channel, since a
    transport notices a dead peer only later."""
    if not isinstance(host.connector, SSHConnector):
        return False
    transport = host.connector.client.get_transport()
    if transport is None or not transport.is_active():
        return True
    try:
        transport.open_session(timeout=5).close()
    except (SSHException, OSError, EOFError):
        return True
    return False


def show(runs: list[PodRun], cwd: Path) -> None:
    """The table on the terminal (stderr: stdout may be pyinfra's --json) and the JSON file."""
    click.echo("--> Per-pod report:", err=True)
    click.echo(render_table(runs), err=True)
    path = cwd / REPORT_PATH
    write_report(path, runs)
    click.echo(f"    (kept in {path})", err=True)
