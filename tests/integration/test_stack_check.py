"""`podforge stack lock` and `stack check` against the real index (uv's resolver) and the real
upstream requirement files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from podforge.controller.upstream import mirror_dir
from podforge.core.lock import entries, for_pod, lock_file, read_header, read_resolved_as_of
from podforge.core.stacks import DEFAULT_STACK, STACK_PROFILES, TOOLS_LOCK

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
    shutil.copy(REPO / "pyproject.toml", copy)  # what the pod tools require, for the lock
    return copy


@pytest.mark.parametrize("profile", sorted(STACK_PROFILES))
def test_a_relock_of_the_committed_inputs_writes_the_committed_bytes(repo_copy, profile):
    # uv reads the index as of the lock's resolved-as-of: whatever was uploaded since (the
    # index moves every day) changes nothing.
    path = repo_copy / lock_file(profile)
    committed = path.read_text()
    done = podforge("lock", "--profile", profile, cwd=repo_copy)
    assert done.returncode == 0, done.stderr
    assert f"stack lock: wrote locks/{profile}.txt" in done.stderr
    assert "stack lock: nothing moved" in done.stderr
    assert path.read_text() == committed
    resolved = {entry.name: entry.version for entry in entries(committed)}
    assert resolved["torch"] == STACK_PROFILES[profile].torch
    assert resolved["xformers"] == STACK_PROFILES[profile].xformers
    assert resolved["numpy"].startswith("1.")  # the profile's numpy<2 held
    assert resolved["opencv-contrib-python"] == resolved["opencv-python"] < "4.12"
    assert resolved["comfyui-frontend-package"] == "1.27.10"  # ComfyUI's own pin
    assert "setuptools" in resolved and "uv" not in resolved  # the tools have their own lock
    assert (
        "--hash=sha256:" in committed and "# via -r ComfyUI-KJNodes/requirements.txt" in committed
    )


def test_the_tools_lock_relocks_to_its_bytes_and_holds_the_tools_alone(repo_copy):
    path = repo_copy / lock_file(TOOLS_LOCK)
    committed = path.read_text()
    done = podforge("lock", "--profile", TOOLS_LOCK, cwd=repo_copy)
    assert done.returncode == 0, done.stderr
    assert "stack lock: nothing moved" in done.stderr and path.read_text() == committed
    header = read_header(committed, str(path))
    assert (header.pins, header.requirements, header.index) == ([], {}, None)
    for target in ("3.10", "3.11", "3.12"):
        python = (*map(int, target.split(".")), 0)
        resolved = {e.name: e.version for e in for_pod(committed, python, "x86_64")}
        assert resolved["uv"] == "0.13.9" and {"boto3", "hf-xet", "pydantic"} <= set(resolved)
        assert not {"torch", "transformers", "numpy"} & set(resolved), target  # no stack


def test_upgrade_reads_the_index_as_of_now_and_says_what_moved(repo_copy):
    path = repo_copy / lock_file(DEFAULT_STACK)
    committed = path.read_text()
    # As if the lock had been written on 2026-11-18 (after uv 0.13.9): the index moved since.
    path.write_text(
        committed.replace(
            f"# resolved-as-of: {read_resolved_as_of(committed)}",
            "# resolved-as-of: 2026-11-18T00:00:00Z",
        )
    )
    older = podforge("lock", cwd=repo_copy)
    assert older.returncode == 0, older.stderr
    assert "the index as of 2026-11-18T00:00:00Z" in older.stderr
    upgraded = podforge("lock", "--upgrade", cwd=repo_copy)
    assert upgraded.returncode == 0, upgraded.stderr
    (moves,) = [line for line in upgraded.stderr.splitlines() if "stack lock: moved: " in line]
    assert " -> " in moves
    assert read_resolved_as_of(path.read_text()) > "2026-12-01"
    assert read_header(path.read_text(), "upgraded") == read_header(committed, "committed")
    path.write_text(committed)


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
