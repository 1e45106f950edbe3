"""System packages the pod needs (Debian/Ubuntu)."""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.operations import apt

from podforge.config import Settings
from podforge.plan import Plan

SYSTEM_PACKAGES = ["ca-certificates", "curl", "git", "python3-venv", "supervisor"]


@deploy("System packages")
def install(settings: Settings, plan: Plan) -> None:
    apt.packages(
        name="Install system packages",
        packages=SYSTEM_PACKAGES,
        update=True,
        cache_time=24 * 3600,
    )
