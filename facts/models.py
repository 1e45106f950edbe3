"""Model-file fact: size and verification stamp of every wanted file, in ONE command.

The command runs podforge/stamps.py's own source with the pod's python3, so the number of
remote commands does not grow with the manifest and nothing is ever re-hashed.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError

from podforge import stamps

_PROGRAM = (
    Path(stamps.__file__).read_text()
    + "\nimport sys\nprint(json.dumps([file_status(d) for d in json.loads(sys.argv[1])]))\n"
)


class ModelFiles(FactBase[list[dict[str, Any]]]):
    """
    For each destination: its size (None when absent) and the sha256 of a stamp that still
    matches the file (None when there is no valid stamp).

    .. code:: python

        [{"dest": "/workspace/ComfyUI/models/vae/wan_2.1_vae.safetensors",
          "size": 253815318, "sha256": "2fc39d31..."}]
    """

    default = list

    def command(self, dests: list[str]) -> str:
        return f"python3 -c {shlex.quote(_PROGRAM)} {shlex.quote(json.dumps(dests))}"

    def process(self, output: list[str]) -> list[dict[str, Any]]:
        try:
            return list(json.loads("\n".join(output)))
        except ValueError as error:
            raise FactProcessError(f"model-file probe printed no JSON: {error}") from error
