"""The sandbox's uv cache with its bytecode compiled in place, and real uv installing from it.

A venv synced with ``--compile-bytecode`` (the deploy's command) hardlinks each module's
bytecode out of the cache, so it compiles nothing; a source that is not valid Python is
named and stays without; a wheel's ``.data`` scripts still install (uv refuses a
``__pycache__`` among them).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from podforge.controller.stack import uv_binary
from sandbox.wheels import build_wheel

SCRIPT = Path(__file__).parents[2] / "sandbox" / "cache_bytecode.py"
PODS_PYTHON = "/usr/bin/python3"  # Debian's, as in the pods' rootfs
PYC = "__pycache__/__init__.cpython-311.pyc"


def install(wheel: Path, venv: Path, environment: dict[str, str]) -> None:
    uv = uv_binary()
    subprocess.run([uv, "venv", "-q", "--python", PODS_PYTHON, str(venv)], check=True)
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(venv / "bin/python"), "--compile-bytecode",
         str(wheel)],
        check=True, env=environment,
    )  # fmt: skip


def test_a_venv_synced_from_the_compiled_cache_hardlinks_its_bytecode(tmp_path: Path) -> None:
    wheel = build_wheel(
        tmp_path / "wheels",
        "demo-pkg",
        "1.0",
        {
            "demo_pkg/__init__.py": b"VALUE = 1\n",
            "demo_pkg/py2_leftover.py": b"print 'a test file of another age'\n",
            "demo_pkg-1.0.data/scripts/demo_tool.py": b"#!python\nprint('tool')\n",
        },
    )
    cache = tmp_path / "cache"
    environment = {**os.environ, "UV_CACHE_DIR": str(cache), "UV_LINK_MODE": "hardlink"}
    install(wheel, tmp_path / "first", environment)  # fills the cache

    compiled = subprocess.run(
        [PODS_PYTHON, str(SCRIPT), str(cache / "archive-v0")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "for 1 of 2 modules" in compiled.stderr
    assert "1 not valid Python 3.11" in compiled.stderr
    assert "demo_pkg/py2_leftover.py" in compiled.stderr
    (cached,) = cache.glob(f"archive-v0/*/demo_pkg/{PYC}")

    venv = tmp_path / "pod"
    install(wheel, venv, environment)
    pyc = venv / "lib/python3.11/site-packages/demo_pkg" / PYC
    # The cache's own bytecode, not a compile of the pod's.
    assert os.stat(pyc).st_ino == os.stat(cached).st_ino
    assert (venv / "bin/demo_tool.py").is_file()
    imported = subprocess.run(
        [str(venv / "bin/python"), "-c", "import demo_pkg; print(demo_pkg.VALUE)"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert imported.stdout == "1\n"
    # Python read the pyc as current: it did not write another.
    assert os.stat(pyc).st_ino == os.stat(cached).st_ino

    again = subprocess.run(
        [PODS_PYTHON, str(SCRIPT), str(cache / "archive-v0")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert os.stat(cached).st_ino == os.stat(pyc).st_ino  # current: left as it was
    assert "for 1 of 2 modules" in again.stderr
