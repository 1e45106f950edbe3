"""Pod-state fact: what tasks compare against, in ONE command however big the pod grows.

ComfyUI's and the nodes' checkouts, both venvs' distributions, the stack and workflows
stamps, nvcc, supervisord, the Debian packages (podforge/probes.py); the files the deploy
writes and its directories (probes.py); each wanted model file's size and verification
stamp (podforge/stamps.py, the fetcher's own judge); whether ComfyUI and r2sync serve right
now (podforge/serving.py, `podforge verify`'s own check, without waiting). The modules are
standard library only; their sources run as one program with the pod's system python3 (no
venv needed), so a no-op pays one interpreter start and one round trip, not one per concern.
"""

from __future__ import annotations

import ast
import json
import shlex
from pathlib import Path
from types import ModuleType
from typing import Any

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError

from podforge import probes, serving, stamps

_FUTURE = "from __future__ import annotations\n"


def _typing_only_in_annotations(source: str) -> str:
    """The source without its imports from typing: under postponed annotations the names they
    bring are read by type checkers alone (typing's import costs each probe start ~2 ms).
    ValueError when one of them is used at run time."""
    tree = ast.parse(source)
    imports = [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.module == "typing"]
    imported = {alias.asname or alias.name for node in imports for alias in node.names}
    annotations = [
        node.annotation if isinstance(node, (ast.arg, ast.AnnAssign)) else node.returns
        for node in ast.walk(tree)
        if isinstance(node, (ast.arg, ast.AnnAssign, ast.FunctionDef))
    ]
    in_annotations = {id(n) for a in annotations if a for n in ast.walk(a)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in imported and id(node) not in in_annotations:
            raise ValueError(f"line {node.lineno}: typing's {node.id} is used at run time")
    dropped = {n for node in imports for n in range(node.lineno, (node.end_lineno or 0) + 1)}
    lines = source.splitlines(keepends=True)
    return "".join(line for number, line in enumerate(lines, 1) if number not in dropped)


def _defined_names(source: str) -> set[str]:
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def one_program(modules: list[ModuleType], main: str) -> str:
    """The modules' sources as one ``python3 -I -S -c`` program ending in ``main``. They share
    one namespace, so a name both define is refused here rather than shadowed on the pod;
    their typing imports are left out (``_typing_only_in_annotations``)."""
    sources = [Path(str(module.__file__)).read_text() for module in modules]
    seen: dict[str, str] = {}
    for module, source in zip(modules, sources, strict=True):
        for name in _defined_names(source):
            if name in seen:
                raise ValueError(f"{name} is defined by both {seen[name]} and {module.__name__}")
            seen[name] = module.__name__
    # The future import must come first in a program: once, on top.
    bodies = [_typing_only_in_annotations(source.replace(_FUTURE, "", 1)) for source in sources]
    return _FUTURE + "".join(bodies) + main


_PROGRAM = one_program(
    [probes, stamps, serving],
    "\nimport sys\n"
    "wish = json.loads(sys.argv[1])\n"
    "print(json.dumps({\n"
    '    "software": software(**wish["software"]),\n'
    '    "files": digests(**wish["files"]),\n'
    '    "models": [file_status(dest) for dest in wish["models"]],\n'
    '    "serving": wish["serving"] and serving_problems(**wish["serving"], timeout=0),\n'
    "}))\n",
)


class PodState(FactBase[dict[str, Any]]):
    """
    ``software``: probes.software's arguments (repos, venv, stamp, deployer, workflows);
    ``files``: probes.digests' (patterns, dirs); ``models``: the wanted model files;
    ``serving``: serving.serving_problems' (comfyui, r2sync, log_dir), or None: not asked.

    .. code:: python

        {"software": {
            "repos": {"/workspace/ComfyUI": {"git": True, "head": "a125cd84...",
                                             "url": "https://github.com/...", "dirty": []},
                      # dirty None: at its pin, local changes not asked (probes.repo_state)
                      "/workspace/ComfyUI/custom_nodes/ComfyUI-GGUF": None},
            "venv": {"torch": "2.5.1", "podforge": "0.1.0+g1a2b3c4d5e6f", ...},  # None: none
            "deployer": {"pyinfra": "3.10.0", ...},  # the boot phase's venv, or None
            "stack_stamp": {"key": "...", "lock": {...}, "shared_imports": [...]},  # or None
            "workflows": {"request": "<sha256>", "files": {"/.../podforge-steadydancer.json":
                          "<sha1 as written>"}, "current": {...: "<sha1 now>"}},  # or None
            "nvcc": "/usr/local/cuda/bin/nvcc",  # or None
            "supervisord": True,  # Debian's supervisord (its pidfile) is running
            "debs": ["curl", "git", ...]},
         "files": {"files": {"/opt/podforge/plan.json": {"sha1": "3f78...", "mode": "644"}},
                   "dirs": {"/workspace/ComfyUI/output": "755", "/workspace/logs": None}},
         "models": [{"dest": "/workspace/ComfyUI/models/vae/wan_2.1_vae.safetensors",
                     "size": 253815318, "sha256": "2fc39d31..."}],  # sha256: a valid stamp's
         "serving": ["r2sync is FATAL; last log lines: ..."]}  # [] serves; None: not asked
    """

    def command(
        self,
        software: dict[str, Any],
        files: dict[str, Any],
        models: list[str],
        serving: dict[str, Any] | None = None,
    ) -> str:
        wish = json.dumps(
            {"software": software, "files": files, "models": models, "serving": serving}
        )
        # -I -S: the pod's PYTHONPATH, user site and site-packages (.pth hooks run at every
        # start) can neither break nor slow the probe; it needs the standard library only.
        return f"python3 -I -S -c {shlex.quote(_PROGRAM)} {shlex.quote(wish)}"

    def process(self, output: list[str]) -> dict[str, Any]:
        try:
            return dict(json.loads("\n".join(output)))
        except ValueError as error:
            raise FactProcessError(f"pod-state probe printed no JSON: {error}") from error
