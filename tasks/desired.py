"""The desired state of this host: its validated settings and its Plan.

Read once per host at the top of deploy.py; every task takes these two and nothing else.
"""

from __future__ import annotations

import os
from typing import Any

from pyinfra import host
from pyinfra.api.exceptions import DeployError

from facts.gpu import NvidiaGpus
from facts.models import ModelFiles
from podforge.config import Settings, SettingsError, load_settings
from podforge.gpu import GpuReport
from podforge.plan import Plan, PlanError, build_plan


def settings() -> Settings:
    """host.data (group_data < inventory < --data) with the environment on top."""
    try:
        return load_settings(host.data.dict(), os.environ)
    except SettingsError as error:
        raise DeployError(f"{host.name}: {error}") from None


def plan(wanted: Settings) -> Plan:
    """The Plan for this host's real GPUs (none are read in the image phase)."""
    gpus = GpuReport() if wanted.phase == "image" else GpuReport(**host.get_fact(NvidiaGpus))
    try:
        return build_plan(wanted, gpus)
    except PlanError as error:
        raise DeployError(f"{host.name}: {error}") from None


def model_files(plan: Plan) -> dict[str, dict[str, Any]]:
    """dest -> {size, sha256 of a still-valid stamp}, for every planned model, in one command."""
    statuses = host.get_fact(ModelFiles, dests=[model.dest for model in plan.models])
    return {status["dest"]: status for status in statuses}
