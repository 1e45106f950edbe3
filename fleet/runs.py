"""A fleet rollout's pure parts: batches, the failure budget, and the per-pod report.

The report (one row per pod) is shown as a table at the end of every deploy and kept as
``.podforge/last-run.json`` in the working directory; its failed pods are what
``--limit last_failed`` reruns.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel

REPORT_PATH = Path(".podforge/last-run.json")

Status = Literal["ok", "failed", "unreachable", "not run"]
Item = TypeVar("Item")


class PodRun(BaseModel):
    """What one deploy did to one pod."""

    pod: str  # the pod's name
    host: str  # pyinfra's host name (what --limit matches)
    gpu: str | None = None
    tier: str | None = None
    stack: str | None = None  # the stack profile its plan chose
    variants: dict[str, object] = {}
    gb_fetched: float = 0.0
    changed: int = 0  # operations that changed something
    duration_s: float = 0.0
    status: Status = "not run"
    cause: str | None = None  # one line, for anything but "ok"


def batches(items: Sequence[Item], size: int | None) -> list[list[Item]]:
    """``items`` in consecutive batches of ``size`` (all at once when size is None or 0)."""
    if size is not None and size < 0:
        raise ValueError(f"batch size must be a positive number of pods, not {size}")
    if not size:
        return [list(items)] if items else []
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def failure_budget(total: int, fail_percent: int | None) -> int | None:
    """How many pods may fail before no new batch starts (None: no budget, never stop)."""
    if fail_percent is None:
        return None
    if not 0 <= fail_percent <= 100:
        raise ValueError(f"--fail-percent takes 0 to 100, not {fail_percent}")
    return math.floor(total * fail_percent / 100)


def budget_spent(failed: int, budget: int | None) -> bool:
    return budget is not None and failed > budget


def is_failure(run: PodRun) -> bool:
    return run.status in ("failed", "unreachable")


def render_table(runs: Sequence[PodRun]) -> str:
    """The report as a fixed-width table, one line per pod, causes under their pod."""
    header = ("POD", "GPU", "TIER", "STACK", "VARIANTS", "GB", "CHANGED", "TIME", "STATUS")
    rows = [
        (
            run.pod,
            run.gpu or "-",
            run.tier or "-",
            run.stack or "-",
            ",".join(f"{k}={_variant(v)}" for k, v in sorted(run.variants.items())) or "-",
            f"{run.gb_fetched:.2f}",
            str(run.changed),
            f"{run.duration_s:.1f}s",
            run.status,
        )
        for run in runs
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(header, widths, strict=True)).rstrip()
    ]
    for run, row in zip(runs, rows, strict=True):
        lines.append(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
        if run.cause:
            lines.append(f"    cause: {run.cause}")
    failed = [run for run in runs if is_failure(run)]
    not_run = [run for run in runs if run.status == "not run"]
    summary = f"{len(runs) - len(failed) - len(not_run)} ok, {len(failed)} failed"
    if not_run:
        summary += f", {len(not_run)} not run"
    if failed or not_run:
        summary += "; rerun them with --limit last_failed"
    lines.append(summary)
    return "\n".join(lines)


def _variant(value: object) -> str:
    """A plan variant in a few characters: {"precision": "gguf", "quant": "q5_0"} -> gguf:q5_0."""
    if isinstance(value, dict):
        return ":".join(str(v) for v in value.values() if v is not None)
    return str(value)


def write_report(path: Path, runs: Sequence[PodRun]) -> None:
    """Replace the report atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    body = {"pods": [run.model_dump(mode="json") for run in runs]}
    partial.write_text(json.dumps(body, indent=2) + "\n")
    os.replace(partial, path)


def read_report(path: Path) -> list[PodRun]:
    if not path.exists():
        return []
    return [PodRun.model_validate(row) for row in json.loads(path.read_text())["pods"]]


def failed_hosts(path: Path) -> list[str]:
    """Host names of the pods the last run did not finish (failed, unreachable, not run)."""
    return [run.host for run in read_report(path) if run.status != "ok"]
