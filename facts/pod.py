"""Pod-state fact: what tasks compare against, in ONE command however big the pod grows.

ComfyUI's and the nodes' checkouts, both venvs' distributions, the stack and workflows
stamps, nvcc, supervisord, the Debian packages (podforge/probes.py); the files the deploy
writes and its directories (probes.py); each wanted model file's size and verification
stamp (probes.file_with_stamp); what ComfyUI, supervisord or systemd say now
(podforge/serving.py, what `podforge verify` reads, without waiting). The modules are
standard library only; their sources run as one program with the pod's system python3 (no
venv needed), so a no-op pays one interpreter start and one round trip, not one per concern.
The program reads and does not judge: stamps and answers come back raw, for the controller
(tasks/desired.py) to judge with the judges the pod's own tools use.
"""

from __future__ import annotations

import ast
import shlex
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError

from podforge import probes, serving, stamps

# Imports that annotations alone use: left out of the shipped program with the annotations.
_TYPING_MODULES = ("typing", "collections.abc")
_Function = TypeVar("_Function", ast.FunctionDef, ast.AsyncFunctionDef)


class _ShippedForm(ast.NodeTransformer):
    """A module as the probe runs it: docstrings, annotations, ``from __future__`` and the
    typing imports left out. Fewer bytes for sshd and two shells to pass and for python3 to
    compile, and no typing or __future__ import, at every probe start (~3 ms of pod CPU)."""

    def __init__(self) -> None:
        self.typing_names: set[str] = set()

    def _body(self, body: list[ast.stmt]) -> list[ast.stmt]:
        first = body[0] if body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
            if isinstance(first.value.value, str):
                body = body[1:]
        return body or [ast.Pass()]

    def visit_Module(self, node: ast.Module) -> ast.Module:
        node.body = self._body(node.body)
        self.generic_visit(node)
        return node

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.ImportFrom | None:
        if node.module == "__future__":
            return None
        if node.module in _TYPING_MODULES:
            self.typing_names.update(alias.asname or alias.name for alias in node.names)
            return None
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
        return self._function(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AsyncFunctionDef:
        return self._function(node)

    def _function(self, node: _Function) -> _Function:
        node.body = self._body(node.body)
        node.returns = None
        self.generic_visit(node)
        return node

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.ClassDef:
        if any(isinstance(statement, ast.AnnAssign) for statement in node.body):
            raise ValueError(
                f"line {node.lineno}: class {node.name}'s annotations are read at run time"
            )
        node.body = self._body(node.body)
        self.generic_visit(node)
        return node

    def visit_arg(self, node: ast.arg) -> ast.arg:
        node.annotation = None
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.Assign | None:
        if node.value is None:
            return None
        return ast.copy_location(ast.Assign([node.target], node.value), node)


def shipped_form(source: str) -> str:
    """``source`` as the probe ships it (_ShippedForm). ValueError when a name the typing
    imports bring is still used once the annotations are gone: it is used at run time."""
    shipped = _ShippedForm()
    tree = ast.fix_missing_locations(shipped.visit(ast.parse(source)))
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in shipped.typing_names:
            raise ValueError(f"line {node.lineno}: typing's {node.id} is used at run time")
    return ast.unparse(tree) + "\n"


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
    """The modules' sources, in their shipped form (``shipped_form``), as one
    ``python3 -I -S -c`` program ending in ``main``. They share one namespace, so a name both
    define is refused here rather than shadowed on the pod."""
    sources = [Path(str(module.__file__)).read_text() for module in modules]
    seen: dict[str, str] = {}
    for module, source in zip(modules, sources, strict=True):
        for name in _defined_names(source):
            if name in seen:
                raise ValueError(f"{name} is defined by both {seen[name]} and {module.__name__}")
            seen[name] = module.__name__
    return "".join(shipped_form(source) for source in sources) + main


_PROGRAM = one_program(
    [probes, serving],
    # The wish arrives as a Python literal ahead of this, the answer leaves as one: json's
    # import (re, enum) would cost every probe start ~6 ms of the pod's CPU.
    "\nprint(repr({\n"
    '    "software": software(**wish["software"]),\n'
    '    "files": digests(**wish["files"]),\n'
    '    "models": [file_with_stamp(dest, stamp) for dest, stamp in wish["models"]],\n'
    '    "serving": wish["serving"] and observe(**wish["serving"]),\n'
    "}))\n",
)


class PodState(FactBase[dict[str, Any]]):
    """
    ``software``: probes.software's arguments (repos, venv, deployer, workflows);
    ``files``: probes.digests' (patterns, dirs); ``models``: the wanted model files;
    ``serving``: serving.observe's (comfyui, r2sync, log_dir), or None: not asked.

    .. code:: python

        {"software": {
            "repos": {"/workspace/ComfyUI": {"git": True, "head": "a125cd84...",
                                             "url": "https://github.com/...", "dirty": []},
                      # dirty None: at its pin, local changes not asked (probes.repo_state)
                      "/workspace/ComfyUI/custom_nodes/ComfyUI-GGUF": None},
            "venv": {"torch": "2.5.1", "podforge": "0.1.0+g1a2b3c4d5e6f", ...},  # None: none
            "deployer": {"pyinfra": "3.10.0", ...},  # the boot phase's venv, or None
            "workflows": '{"request": "<sha256>", "files": {...}}',  # its text, or None
            "nvcc": "/usr/local/cuda/bin/nvcc",  # or None
            "supervisord": True,  # Debian's supervisord (its pidfile) is running
            "debs": ["curl", "git", ...]},
         "files": {"files": {"/opt/podforge/plan.json": {"sha1": "3f78...", "mode": "644"}},
                   "dirs": {"/workspace/ComfyUI/output": "755", "/workspace/logs": None}},
         "models": [{"dest": "/workspace/ComfyUI/models/vae/wan_2.1_vae.safetensors",
                     "size": 253815318, "mtime_ns": 1763..., "stamp": '{"size": ...}'}],
         "serving": {"manager": "supervisor", "where": "supervisord at ...",
                     "states": {"comfyui-0": "RUNNING", "r2sync": "FATAL"},
                     "answers": [{"body": '{"system": {"argv": [...], ...}}'}],
                     "logs": {"comfyui-0": "...", "r2sync": "..."}}}  # None: not asked
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
        program = f"wish = {wish!r}\n{_PROGRAM}"
        # -I -S: the pod's PYTHONPATH, user site and site-packages (.pth hooks run at every
        # start) can neither break nor slow the probe; it needs the standard library only.
        return f"python3 -I -S -c {shlex.quote(program)}"

    def process(self, output: list[str]) -> dict[str, Any]:
        try:
            return dict(ast.literal_eval("\n".join(output)))
        except (ValueError, SyntaxError) as error:
            raise FactProcessError(
                f"the pod-state probe printed no Python literal: {error}"
            ) from error
