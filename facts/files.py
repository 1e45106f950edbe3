"""File-digest fact: sha1 and mode of the files the deploy writes, and which of its
directories exist, in ONE command (podforge/probes.py's source, run by the pod's python3).
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
    + "\nimport sys\nprint(json.dumps(digests(**json.loads(sys.argv[1]))))\n"
)


class FileDigests(FactBase[dict[str, Any]]):
    """
    .. code:: python

        {"files": {"/opt/podforge/plan.json": {"sha1": "3f78...", "mode": "644"}},
         "dirs": {"/workspace/ComfyUI/output": True}}
    """

    def command(self, patterns: list[str], dirs: list[str]) -> str:
        args = json.dumps({"patterns": patterns, "dirs": dirs})
        return f"python3 -c {shlex.quote(_PROGRAM)} {shlex.quote(args)}"

    def process(self, output: list[str]) -> dict[str, Any]:
        try:
            return dict(json.loads("\n".join(output)))
        except ValueError as error:
            raise FactProcessError(f"file-digest probe printed no JSON: {error}") from error
