"""The serving fact: `podforge verify` read as data, for a deploy that changes nothing."""

from __future__ import annotations

from typing import Any

from pyinfra.api import FactBase


class PodServes(FactBase[dict[str, Any]]):
    """
    .. code:: python

        {"ok": False, "lines": ["verify: FAILED comfyui-0 (port 8188, FATAL): ..."]}
    """

    def command(self, command: str) -> str:
        # The verdict is the exit status, reported as data (the fact itself must not fail).
        return f'{command} 2>&1; echo "podforge-verify-exit=$?"'

    def process(self, output: list[str]) -> dict[str, Any]:
        lines = [line for line in output if not line.startswith("podforge-verify-exit=")]
        exits = [
            line.split("=", 1)[1] for line in output if line.startswith("podforge-verify-exit=")
        ]
        return {"ok": exits == ["0"], "lines": lines}
