"""The sandbox starts and stops by PID and leaves nothing behind, even after a failed start."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sandbox import control
from sandbox.pods import is_alive

pytestmark = [pytest.mark.e2e, pytest.mark.podless]


def _processes_for(base: Path) -> list[int]:
    """Processes started for this sandbox (their environment names its directory)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str(base).encode() in (proc / "environ").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue  # gone meanwhile, or a kernel thread
    return found


def _mounts_under(base: Path) -> list[str]:
    with open("/proc/self/mountinfo") as mounts:
        return [line.split()[4] for line in mounts if line.split()[4].startswith(str(base))]


@pytest.fixture
def base(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the sandbox needs root (namespaces, mounts)")
    yield tmp_path
    control.down(tmp_path)


def test_up_then_down_leaves_nothing(base):
    state = control.up(["none"], base, first_address=60)
    pids = [pod["pid"] for pod in state["pods"]] + [state["hub"]["pid"], state["s3"]["pid"]]
    assert all(is_alive(pid) for pid in pids)
    control.down(base)
    assert not any(is_alive(pid) for pid in pids)
    assert _mounts_under(base) == []
    assert _processes_for(base) == []
    assert sorted(p.name for p in base.iterdir()) == ["ssh"]


def test_a_failed_start_cleans_up(base):
    with pytest.raises(ValueError, match="unknown GPU profile 'rtx-9999'"):
        control.up(["h100", "rtx-9999"], base, first_address=62)
    assert not control.state_path(base).exists()
    assert _processes_for(base) == []
    assert _mounts_under(base) == []
    assert not (base / "pods").exists()
