"""Preflight: refuse a host before any change when it lacks what the plan needs."""

from __future__ import annotations

from typing import Any

from pyinfra import host, logger, state

from facts.host import PodHost
from podforge.config import Settings
from podforge.plan import Plan
from podforge.preflight import shortfalls


def passes(settings: Settings, plan: Plan, present: dict[str, dict[str, Any]]) -> bool:
    """True when the host can take the plan; otherwise log why and fail this host alone.

    ``present``: the model-file fact; files already in place need no disk again.
    """
    for warning in plan.warnings:
        logger.warning(f"{host.print_prefix}{warning}")
    in_place = sum(status["size"] or 0 for status in present.values())
    problems = shortfalls(plan, host.get_fact(PodHost, models_dir=settings.models_dir), in_place)
    if not problems:
        return True
    for problem in problems:
        logger.error(f"{host.print_prefix}preflight refused: {problem}")
    state.fail_hosts({host})
    return False
