"""Where code may reach, by where it runs (docs/layout.md):

- podforge/core does no I/O and imports none of podforge's other packages; the workflow
  modules that judge (graph, needs, checks, fitting) do no I/O either;
- podforge/probe (shipped by facts/pod.py to the pod's system python3) imports the standard
  library alone;
- nothing that reaches a pod (deploy.py, tasks, facts, operations, podforge) imports fleet/;
- nothing in production imports the sandbox.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The stand-ins and what drives them; inventories/sandbox.py gives sandbox pods their data.
MAY_IMPORT_SANDBOX = ("sandbox", "tests", "bench")
# What the boot phase runs on the pod (tasks/boot.py BUNDLE, podforge's wheel).
REACHES_THE_POD = ("deploy.py", "tasks", "facts", "operations", "podforge", "group_data")
# Standard-library modules that reach files, processes, the network or the clock.
IO_MODULES = {
    "os",
    "sys",
    "io",
    "subprocess",
    "socket",
    "shutil",
    "tempfile",
    "pathlib",
    "glob",
    "urllib",
    "http",
    "fcntl",
    "sqlite3",
    "threading",
    "concurrent",
    "time",
    "random",
    "uuid",
    "signal",
    "logging",
}
# ... except these parts of them, which only compute.
PURE = {"urllib.parse"} | {f"urllib.parse.{name}" for name in ("urlsplit", "quote", "urlencode")}
IO_BUILTINS = {"open", "print", "input", "exec", "eval", "__import__"}


def imports(path: Path) -> set[str]:
    """Dotted names of every module the file imports (absolute imports; ``from a import b``
    gives both ``a`` and ``a.b``, since b may be a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def builtin_calls(path: Path) -> set[str]:
    """Names called as plain functions, outside an ``if __name__ == "__main__":`` block (a
    script's entry, such as stacks.py printing the deployer's requirements for the
    Dockerfile, is not the module)."""
    tree = ast.parse(path.read_text())
    body = [
        node
        for node in tree.body
        if not (isinstance(node, ast.If) and "__main__" in ast.unparse(node.test))
    ]
    return {
        node.func.id
        for top in body
        for node in ast.walk(top)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }


def tops(names: set[str]) -> set[str]:
    return {name.split(".")[0] for name in names}


def python_files(*under: str) -> list[Path]:
    found = []
    for entry in under:
        path = REPO / entry
        found += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return [p for p in found if "__pycache__" not in p.parts]


def production_files() -> list[Path]:
    ours = [*REPO.glob("*.py"), *REPO.glob("*/**/*.py")]
    return [
        path
        for path in ours
        if path.relative_to(REPO).parts[0] not in (*MAY_IMPORT_SANDBOX, ".venv", ".sandbox")
        and path.relative_to(REPO) != Path("inventories/sandbox.py")
    ]


def test_the_core_does_no_io_and_imports_nothing_of_podforge_but_itself():
    core = python_files("podforge/core")
    assert REPO / "podforge/core/plan.py" in core
    for path in core:
        names = imports(path)
        ours = {n for n in names if n.startswith("podforge.")}
        assert all(n.startswith("podforge.core") for n in ours), (path.name, ours)
        reaching = {n for n in names if n.split(".")[0] in IO_MODULES and n not in PURE}
        assert not reaching, (path.name, reaching)
        assert not builtin_calls(path) & IO_BUILTINS, (path.name, builtin_calls(path))


# The workflow modules that only compute (files.py and pod.py read and write).
PURE_WORKFLOWS = ("graph.py", "needs.py", "checks.py", "fitting.py")


def test_the_workflows_judge_without_io_on_the_core_alone():
    for name in PURE_WORKFLOWS:
        path = REPO / "podforge/workflows" / name
        names = imports(path)
        ours = {n.split(".")[1] for n in names if n.startswith("podforge.")}
        assert ours <= {"core", "workflows"}, (name, ours)
        reached = {n.split(".")[2] for n in names if n.startswith("podforge.workflows.")}
        assert reached <= {p.removesuffix(".py") for p in PURE_WORKFLOWS}, (name, reached)
        reaching = {n for n in names if n.split(".")[0] in IO_MODULES and n not in PURE}
        assert not reaching, (name, reaching)
        assert not builtin_calls(path) & IO_BUILTINS, (name, builtin_calls(path))


def test_the_probe_ships_standard_library_only():
    probe = python_files("podforge/probe")
    assert REPO / "podforge/probe/state.py" in probe
    for path in probe:
        assert tops(imports(path)) <= set(sys.stdlib_module_names), path.name


def test_nothing_that_reaches_the_pod_imports_the_fleet():
    files = python_files(*REACHES_THE_POD)
    assert REPO / "tasks" / "desired.py" in files
    offenders = [str(p.relative_to(REPO)) for p in files if "fleet" in tops(imports(p))]
    assert offenders == []


def test_nothing_in_production_imports_the_sandbox():
    files = production_files()
    assert REPO / "deploy.py" in files and REPO / "group_data" / "all.py" in files
    offenders = [str(p.relative_to(REPO)) for p in files if "sandbox" in tops(imports(p))]
    assert offenders == []
