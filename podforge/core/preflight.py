"""Preflight: does this host have what the plan needs? Pure; facts in, problems out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from podforge.core.plan import Plan

GIB = 2**30


def shortfalls(
    plan: Plan, host: Mapping[str, Any], present_bytes: int = 0, stack_in_place: bool = False
) -> list[str]:
    """One line per requirement the host falls short of, saying by how much.

    ``present_bytes``: model bytes already at their destinations (not needed again);
    ``stack_in_place``: the venv holds the lock already (its bytes are not needed again).
    """
    problems: list[str] = []
    need = plan.requirements
    free = host["disk_free_kib"] * 1024
    in_place = present_bytes + (need.stack_bytes if stack_in_place else 0)
    disk_needed = max(need.disk_bytes - in_place, 0)
    if free < disk_needed:
        problems.append(
            f"disk: {disk_needed / GIB:.1f} GiB needed under {host['disk_path']}, "
            f"{free / GIB:.1f} GiB free ({(disk_needed - free) / GIB:.1f} GiB short)"
        )
    memory_mib = host["mem_total_kib"] // 1024
    if memory_mib < need.memory_mib:
        problems.append(
            f"memory: {need.memory_mib} MiB needed for memory mode {plan.memory_mode}, "
            f"{memory_mib} MiB installed ({need.memory_mib - memory_mib} MiB short)"
        )
    python = host["python"]
    wanted = ".".join(map(str, need.python))
    if python is None:
        problems.append(f"python: python3 >= {wanted} needed, none found on PATH")
    elif tuple(python[:2]) < need.python:
        found = ".".join(map(str, python))
        problems.append(f"python: python3 >= {wanted} needed, found {found}")
    return problems
