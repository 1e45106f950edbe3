"""GPU fact: what nvidia-smi says about the pod's GPUs, MIG slices included."""

from __future__ import annotations

from typing import Any

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError

from podforge.core.gpu import PROBE_COMMAND, GpuProbeError, GpuReport, parse_probe


class NvidiaGpus(FactBase[dict[str, Any]]):
    """
    Usable GPU devices (a MIG slice counts as its own device with its own memory), plus
    warnings such as "nvidia-smi is here but the driver is not loaded".

    .. code:: python

        {
            "devices": [
                {"index": 0, "gpu_index": 0, "name": "NVIDIA GeForce RTX 4090",
                 "vram_mib": 24564, "mig": None, "uuid": "GPU-...",
                 "driver_version": "550.54.15", "compute_cap": "8.9"},
            ],
            "warnings": [],
        }

    No nvidia-smi on the host gives no devices and no warning.
    """

    @staticmethod
    def default() -> dict[str, Any]:
        return GpuReport().model_dump(mode="json")

    def command(self) -> str:
        return PROBE_COMMAND

    def process(self, output: list[str]) -> dict[str, Any]:
        try:
            return parse_probe(list(output)).model_dump(mode="json")
        except GpuProbeError as error:
            raise FactProcessError(str(error)) from error
