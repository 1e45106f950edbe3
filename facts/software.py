"""Software fact: ComfyUI's and the nodes' checkouts, the venv's distributions, the stack
stamp and nvcc, in ONE command (podforge/probes.py's own source, run by the pod's python3).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError

from podforge import probes

_PROGRAM = (
    Path(probes.__file__).read_text()
    + "\nimport sys\nprint(json.dumps(software(**json.loads(sys.argv[1]))))\n"
)


class PodSoftware(FactBase[dict[str, Any]]):
    """
    .. code:: python

        {"repos": {"/workspace/ComfyUI": {"git": True, "head": "a125cd84...",
                                          "url": "https://github.com/...", "dirty": []},
                   "/workspace/ComfyUI/custom_nodes/ComfyUI-GGUF": None},
         "venv": {"torch": "2.5.1", "podforge": "0.1.0+g1a2b3c4d5e6f", ...},  # None: no venv
         "deployer": {"pyinfra": "3.10.0", ...},  # the boot phase's venv, or None
         "stack_stamp": {"key": "...", "lock": {...}, "shared_imports": [...]},  # or None
         "workflows": {"request": "<sha256>", "files": {"/.../podforge-steadydancer.json":
                       "<sha1 as written>"}, "current": {...: "<sha1 now>"}},  # or None
         "nvcc": "/usr/local/cuda/bin/nvcc",  # or None
         "supervisord": True}  # Debian's supervisord (its pidfile) is running
    """

    def command(
        self, repos: list[str], venv: str, stamp: str, deployer: str, workflows: str
    ) -> str:
        args = json.dumps(
            {
                "repos": repos,
                "venv": venv,
                "stamp": stamp,
                "deployer": deployer,
                "workflows": workflows,
            }
        )
        return f"python3 -c {shlex.quote(_PROGRAM)} {shlex.quote(args)}"

    def process(self, output: list[str]) -> dict[str, Any]:
        try:
            return dict(json.loads("\n".join(output)))
        except ValueError as error:
            raise FactProcessError(f"software probe printed no JSON: {error}") from error
