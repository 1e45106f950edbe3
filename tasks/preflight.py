"""Preflight: refuse a host before any change when it lacks what the plan needs."""

from __future__ import annotations

from pyinfra import host, logger, state
from pyinfra.context import ctx_host

from podforge.core.config import Settings
from podforge.core.lock import holds
from podforge.core.plan import Plan
from podforge.core.preflight import shortfalls
from tasks.desired import Pod, StackLock


def passes(settings: Settings, plan: Plan, pod: Pod, lock: StackLock, tools: StackLock) -> bool:
    """True when the host can take the plan and its locks (the stack's, the tools') are
    current; otherwise log
    why and fail this host alone. Model files already in place need no disk again.
    """
    logger.info(f"{host.print_prefix}plan: {plan.summary()}")
    for warning in plan.warnings:
        logger.warning(f"{host.print_prefix}{warning}")
    in_place = sum(status["size"] or 0 for status in pod.models.values())
    problems = shortfalls(plan, pod.host, in_place, _stack_in_place(pod, lock))
    problems += [found.problem for found in (lock, tools) if found.problem]
    if not problems:
        return True
    for problem in problems:
        logger.error(f"{host.print_prefix}preflight refused: {problem}")
    # The Host itself, not pyinfra's `host` proxy: outside this host's greenlet the proxy
    # hashes as another object, so `host in state.failed_hosts` would miss it.
    state.fail_hosts({ctx_host.get()})
    return False


def _stack_in_place(pod: Pod, lock: StackLock) -> bool:
    """The venv holds this lock already: a deploy needs no disk for it again."""
    venv = pod.software["venv"]
    return bool(lock.installs) and venv is not None and holds(venv, lock.installs)
