"""Host fact: the few things preflight weighs (init system, disk, memory, Python)."""

from __future__ import annotations

import re
import shlex
from typing import Any

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError

_INT_KEYS = ("disk_free_kib", "mem_total_kib", "mem_available_kib")


class PodHost(FactBase[dict[str, Any]]):
    """
    Init system (from PID 1), free disk under ``models_dir`` (or its nearest existing
    parent), memory, the system Python, the machine and the OS, in one command.

    .. code:: python

        {"init": "tini", "systemd": False, "disk_path": "/workspace",
         "disk_free_kib": 52428800, "mem_total_kib": 65536000,
         "mem_available_kib": 60000000, "python": (3, 11, 2), "machine": "x86_64",
         "os": "debian12"}
    """

    def command(self, models_dir: str) -> str:
        # Shell builtins where a tool is not needed: each exec costs the pod ~1 ms of CPU
        # on every deploy; df, python3 -V and uname remain.
        return "; ".join(
            [
                'read -r init < /proc/1/comm; echo "init=$init"',
                f"d={shlex.quote(models_dir)}",
                'while [ ! -d "$d" ]; do d=$(dirname "$d"); done',
                'echo "disk_path=$d"',
                'df -Pk "$d" | { read -r _; read -r _ _ _ free _; echo "disk_free_kib=$free"; }',
                "while read -r key value _; do case $key in"
                ' MemTotal:) echo "mem_total_kib=$value";;'
                ' MemAvailable:) echo "mem_available_kib=$value";;'
                " esac; done < /proc/meminfo",
                # -V answers before the interpreter starts (1 ms; -c costs 10 ms).
                'if command -v python3 >/dev/null; then v=$(python3 -V); echo "python=${v#* }"; '
                "else echo python=; fi",
                'echo "machine=$(uname -m)"',
                '( . /etc/os-release; echo "os=$ID$VERSION_ID" )',
            ]
        )

    def process(self, output: list[str]) -> dict[str, Any]:
        values = dict(line.split("=", 1) for line in output if "=" in line)
        missing = {"init", "disk_path", *_INT_KEYS, "python", "machine", "os"} - values.keys()
        if missing:
            raise FactProcessError(f"host probe is missing {', '.join(sorted(missing))}")
        info: dict[str, Any] = {key: int(values[key]) for key in _INT_KEYS}
        info["init"] = values["init"].strip()
        info["systemd"] = info["init"] == "systemd"
        info["disk_path"] = values["disk_path"]
        python = values["python"].strip()
        version = re.match(r"(\d+)\.(\d+)\.(\d+)", python)  # 3.13.0rc1 -> (3, 13, 0)
        if python and not version:
            raise FactProcessError(f"host probe: python3 -V printed {python!r}, not a version")
        info["python"] = tuple(int(part) for part in version.groups()) if version else None
        info["machine"] = values["machine"].strip()
        # ubuntu22.04 -> ubuntu2204, debian12: how NVIDIA's apt repositories name the OS.
        info["os"] = values["os"].strip().replace(".", "")
        return info
