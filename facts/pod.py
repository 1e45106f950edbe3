"""Pod-state fact: what tasks compare against, in ONE command however big the pod grows.

ComfyUI's and the nodes' checkouts, both venvs' distributions, the workflows stamp, nvcc,
supervisord, the Debian packages (podforge/probe/state.py); the files the deploy
writes and its directories (probe/state.py); each wanted model file's size and verification
stamp (state.file_with_stamp); what ComfyUI, supervisord or systemd say now
(podforge/probe/serving.py, what `podforge verify` reads, without waiting). The modules are
standard library only; their sources run as one program with the pod's system python3 (no
venv needed), so a no-op pays one interpreter start and one round trip, not one per concern.
The program reads and does not judge: stamps and answers come back raw, for the controller
(tasks/desired.py) to judge with the judges the pod's own tools use.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any, TypedDict

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError

from podforge.pod import stamps
from podforge.probe import serving, state


def _module(module: Any) -> str:
    """A module's source, loaded on the pod as a module of that name (its own namespace; a
    traceback names its file and lines as they are here)."""
    path = Path(str(module.__file__))
    name = module.__name__.rsplit(".", 1)[1]
    filename = f"podforge/probe/{path.name}"
    return f"{name} = load({name!r}, {filename!r}, {path.read_text()!r})\n"


_PROGRAM = (
    "import json, sys, types\n"
    "def load(name, filename, source):\n"
    "    module = types.ModuleType(name)\n"
    "    exec(compile(source, filename, 'exec'), module.__dict__)\n"
    "    return module\n" + _module(state) + _module(serving) + "wish = json.loads(sys.argv[1])\n"
    "print(json.dumps({\n"
    '    "software": state.software(**wish["software"]),\n'
    '    "files": state.digests(**wish["files"]),\n'
    '    "models": [state.file_with_stamp(dest, stamp) for dest, stamp in wish["models"]],\n'
    '    "serving": wish["serving"] and serving.observe(**wish["serving"]),\n'
    "}))\n"
)


class PodStateAnswer(TypedDict):
    """What the probe program prints: each part in the shape its function gives it."""

    software: state.Software
    files: state.Files
    models: list[state.ModelFile]  # the wanted model files, in the order asked
    serving: serving.Observed | None  # None: not asked (the image phase, the boot phase)


class PodState(FactBase[PodStateAnswer]):
    """
    ``software``: state.software's arguments (repos, venv, deployer, workflows);
    ``files``: state.digests' (patterns, dirs); ``models``: the wanted model files;
    ``serving``: serving.observe's (comfyui, r2sync, log_dir), or None: not asked.
    The answer: ``PodStateAnswer``, its parts' shapes beside the probe functions that make
    them (podforge/probe/state.py, serving.py).
    """

    def command(
        self,
        software: dict[str, Any],
        files: dict[str, Any],
        models: list[str],
        serving: dict[str, Any] | None = None,
    ) -> str:
        wish = {
            "software": software,
            "files": files,
            "models": [(dest, stamps.stamp_path(dest)) for dest in models],
            "serving": serving,
        }
        # -I -S: the pod's PYTHONPATH, user site and site-packages (.pth hooks run at every
        # start) can neither break nor slow the probe; it needs the standard library only.
        return f"python3 -I -S -c {shlex.quote(_PROGRAM)} {shlex.quote(json.dumps(wish))}"

    def process(self, output: list[str]) -> PodStateAnswer:
        try:
            answer: PodStateAnswer = json.loads("\n".join(output))
            return answer
        except ValueError as error:
            raise FactProcessError(f"the pod-state probe printed no JSON: {error}") from error
