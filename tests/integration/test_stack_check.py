"""`podforge stack lock` and `stack check` against the real index (uv's resolver) and the real
upstream requirement files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from podforge.build.upstream import mirror_dir
from podforge.core.lock import entries, lock_file, read_header
from podforge.core.stacks import DEFAULT_STACK

pytestmark = pytest.mark.pypi

REPO = Path(__file__).resolve().parents[2]


def podforge(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    # GitHub is out of reach here: the pins' requirement files come from the mirror.
    env = {**os.environ, "PODFORGE_UPSTREAM": str(mirror_dir())}
    return subprocess.run(
        [sys.executable, "-m", "podforge", "stack", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=env,
    )


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory) -> Path:
    """The code and settings of the repo, where `stack lock` may write its locks/."""
    copy = tmp_path_factory.mktemp("repo")
    for name in ("podforge", "group_data", "sandbox", "locks"):
        shutil.copytree(REPO / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_lock_twice_writes_the_same_file_for_the_committed_inputs(repo_copy):
    path = repo_copy / lock_file(DEFAULT_STACK)
    committed = read_header(path.read_text(), "committed")
    path.unlink()
    first = podforge("lock", cwd=repo_copy)
    assert first.returncode == 0, first.stderr
    assert "stack lock: wrote locks/torch25-cu124.txt" in first.stderr
    written = path.read_text()
    # The inputs (requirement files at the pins, pins, constraints) are the committed ones.
    assert read_header(written, "written") == committed
    assert podforge("lock", cwd=repo_copy).returncode == 0
    assert path.read_text() == written
    resolved = {entry.name: entry.version for entry in entries(written)}
    assert resolved["torch"] == "2.5.1" and resolved["xformers"] == "0.0.28.post3"
    assert resolved["transformers"].startswith("4.")  # transformers<5 held
    assert resolved["numpy"].startswith("1.")  # the profile's numpy<2 held
    assert resolved["opencv-contrib-python"] == resolved["opencv-python"] < "4.12"
    assert resolved["comfyui-frontend-package"] == "1.27.10"  # ComfyUI's own pin
    assert "setuptools" in resolved and resolved["uv"] == "0.13.9"
    assert "--hash=sha256:" in written and "# via -r ComfyUI-KJNodes/requirements.txt" in written


def test_check_resolves_the_pins_without_writing(repo_copy):
    done = podforge("check", cwd=repo_copy)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "torch 2.5.1" in lines
    assert lines[-1].startswith("stack check: torch25-cu124 resolves:")


def test_a_conflict_is_traced_to_its_node(tmp_path: Path):
    node = tmp_path / "ComfyUI-NeedsNumpy2"
    node.mkdir()
    (node / "requirements.txt").write_text("opencv-python>=4.12\n")
    done = podforge("check", str(node))
    assert done.returncode == 1
    assert "ComfyUI-NeedsNumpy2 requires opencv-python>=4.12" in done.stderr
    assert "the stack profile torch25-cu124 constrains opencv-python<4.12" in done.stderr


def test_a_node_contradicting_a_pin_is_named_before_resolving(tmp_path: Path):
    node = tmp_path / "ComfyUI-NeedsNewerTorch"
    node.mkdir()
    (node / "requirements.txt").write_text("torch>=2.6\n")
    done = podforge("check", str(node))
    assert done.returncode == 1
    assert done.stderr.startswith(
        "podforge stack: ComfyUI-NeedsNewerTorch requires torch>=2.6, but the stack profile"
        " torch25-cu124 pins torch==2.5.1"
    )
