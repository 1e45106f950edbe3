"""Where code may reach: production never imports the sandbox, and what the pod-state fact
ships to the pod's system python3 imports the standard library alone."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from podforge import probes, serving

REPO = Path(__file__).resolve().parents[2]
# The stand-ins and what drives them; inventories/sandbox.py gives sandbox pods their data.
MAY_IMPORT_SANDBOX = ("sandbox", "tests", "bench")


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module the file imports (absolute imports)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def production_files() -> list[Path]:
    ours = [*REPO.glob("*.py"), *REPO.glob("*/**/*.py")]
    return [
        path
        for path in ours
        if path.relative_to(REPO).parts[0] not in (*MAY_IMPORT_SANDBOX, ".venv", ".sandbox")
        and path.relative_to(REPO) != Path("inventories/sandbox.py")
    ]


def test_nothing_in_production_imports_the_sandbox():
    files = production_files()
    assert REPO / "deploy.py" in files and REPO / "group_data" / "all.py" in files
    offenders = [str(p.relative_to(REPO)) for p in files if "sandbox" in imported_modules(p)]
    assert offenders == []


def test_the_probe_ships_standard_library_only():
    for module in (probes, serving):
        imported = imported_modules(Path(str(module.__file__)))
        assert imported <= set(sys.stdlib_module_names), (module.__name__, imported)
