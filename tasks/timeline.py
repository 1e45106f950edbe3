"""The deploy's timeline, last in the recipe: every operation's start and end on each pod, as
pyinfra runs them (a state callback), printed at the end of a deploy that changed something
and kept on the pod (``{podforge_dir}/timeline.json``). A deploy that changes nothing keeps
the last one, so it stays a no-op. podforge/core/timeline.py reads the steps from it.
"""

from __future__ import annotations

import io
import json
import time
from collections import defaultdict
from datetime import datetime, timezone

from pyinfra import host, logger, state
from pyinfra.api.exceptions import NestedOperationError
from pyinfra.api.host import Host
from pyinfra.api.state import BaseStateCallback, State
from pyinfra.operations import python

from podforge.core.config import Settings
from podforge.core.timeline import Operation, Timeline, Transfer, steps
from tasks.models import FETCHES
from tasks.verify import deploy_changes


def timeline_file(settings: Settings) -> str:
    return f"{settings.podforge_dir}/timeline.json"


class Recorder(BaseStateCallback):
    """Each host's operations with their monotonic start and end, as they ran."""

    def __init__(self) -> None:
        self.operations: dict[str, list[Operation]] = defaultdict(list)
        self.started_at: dict[str, float] = {}  # the host's first operation, wall clock
        self._running: dict[tuple[str, str], tuple[str, float]] = {}

    def operation_host_start(self, state: State, host: Host, op_hash: str) -> None:
        name = min(state.get_op_meta(op_hash).names)
        self._running[(host.name, op_hash)] = (name, time.monotonic())
        self.started_at.setdefault(host.name, time.time())

    def operation_host_success(
        self, state: State, host: Host, op_hash: str, retry_count: int = 0
    ) -> None:
        self._ended(host, op_hash)

    def operation_host_error(
        self, state: State, host: Host, op_hash: str, retry_count: int = 0, max_retries: int = 0
    ) -> None:
        self._ended(host, op_hash)

    def _ended(self, host: Host, op_hash: str) -> None:
        name, start = self._running.pop((host.name, op_hash))
        self.operations[host.name].append(Operation(name, start, time.monotonic()))


def recorder() -> Recorder:
    """This run's recorder: one per pyinfra State (a process may run several, as the sandbox's
    and the fleet's do), added to it while the deploy is planned, before any operation runs."""
    for handler in state.callback_handlers:
        if isinstance(handler, Recorder):
            return handler
    added = Recorder()
    state.add_callback_handler(added)
    return added


def keep(settings: Settings) -> None:
    """Print this deploy's timeline and keep it on the pod, when the deploy changes it."""
    if settings.phase == "image":
        host.noop("the timeline is kept by the pod's deploys, not the image's build")
        return
    if not deploy_changes():
        host.noop(f"nothing changed: {timeline_file(settings)} keeps the last deploy's timeline")
        return
    recorder()
    python.call(
        name=f"Timeline: print it, keep it in {timeline_file(settings)}",
        function=_print_and_keep,
        path=timeline_file(settings),
    )


def _print_and_keep(path: str) -> None:
    recorded = recorder()
    fetch = FETCHES.get(host.name)
    fetched = (
        {"Models": Transfer(fetch.fetched_bytes, fetch.fetch_seconds)}
        if fetch and fetch.fetched_bytes
        else {}
    )
    started = datetime.fromtimestamp(recorded.started_at[host.name], timezone.utc)
    timeline = Timeline(
        host.name,
        started.isoformat(timespec="seconds"),
        steps(recorded.operations[host.name], fetched),
    )
    for line in timeline.lines():
        logger.info(f"{host.print_prefix}{line}")
    text = json.dumps(timeline.as_json(), indent=1) + "\n"
    if not host.put_file(io.BytesIO(text.encode()), path):
        raise NestedOperationError(f"the timeline was not written to {path}")
