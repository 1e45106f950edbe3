"""`podforge stack check` against the real index: pip's resolver, the real upstream files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from podforge.pins import DEFAULT_CUSTOM_NODES
from sandbox.repos import upstream_dir

pytestmark = pytest.mark.pypi

UPSTREAM = upstream_dir()
DIRS = [str(UPSTREAM / name) for name in ["ComfyUI", *(n.name for n in DEFAULT_CUSTOM_NODES)]]


def check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "podforge", "stack", "check", "--without-flash-attn", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_default_nodes_resolve_on_the_default_profile():
    done = check("--profile", "torch25-cu124", *DIRS)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    pairs = [line.split(" ") for line in lines if line.count(" ") == 1]
    resolved = {canonicalize_name(name): version for name, version in pairs}
    assert resolved["torch"] == "2.5.1" and resolved["xformers"] == "0.0.28.post3"
    assert resolved["numpy"].startswith("1.")  # the profile's numpy<2 held
    assert resolved["comfyui-frontend-package"] == "1.27.10"  # ComfyUI's own pin
    assert resolved["opencv-contrib-python"] == resolved["opencv-python"]
    assert "opencv-contrib-python" in next(line for line in lines if "`cv2`" in line)
    assert lines[-1].startswith("stack check: torch25-cu124 resolves:")


def test_a_conflict_is_traced_to_its_node(tmp_path: Path):
    node = tmp_path / "ComfyUI-NeedsNumpy2"
    node.mkdir()
    (node / "requirements.txt").write_text("opencv-python>=4.12\n")
    done = check("--profile", "torch25-cu124", str(node))
    assert done.returncode == 1
    assert "(required by ComfyUI-NeedsNumpy2) depends on numpy" in done.stderr
    assert "the stack profile torch25-cu124 constrains numpy<2" in done.stderr
