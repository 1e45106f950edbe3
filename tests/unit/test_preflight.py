"""Preflight weighs the host fact against the plan and says by how much it falls short."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pyinfra.api.exceptions import FactProcessError

from facts.host import PodHost
from podforge.core.config import load_settings
from podforge.core.gpu import GpuReport
from podforge.core.plan import build_plan
from podforge.core.preflight import shortfalls

HOST_OUTPUT = [
    "init=tini",
    "disk_path=/workspace",
    "disk_free_kib=10485760",  # 10 GiB
    "mem_total_kib=65536000",
    "mem_available_kib=60000000",
    "machine=x86_64",
    "os=ubuntu2204",
    "python=3.11.2",
]


def test_host_fact_parses_its_one_command():
    fact = PodHost().process(HOST_OUTPUT)
    assert fact == {
        "init": "tini",
        "systemd": False,
        "disk_path": "/workspace",
        "disk_free_kib": 10485760,
        "mem_total_kib": 65536000,
        "mem_available_kib": 60000000,
        "python": (3, 11, 2),
        "machine": "x86_64",
        "os": "ubuntu2204",
    }
    assert PodHost().process([*HOST_OUTPUT[1:], "init=systemd"])["systemd"] is True
    # /etc/os-release's VERSION_ID has a dot on Ubuntu; NVIDIA's repositories have none.
    assert PodHost().process([*HOST_OUTPUT[:6], "os=ubuntu22.04", HOST_OUTPUT[7]])["os"] == (
        "ubuntu2204"
    )


def test_host_fact_command_runs_here(tmp_path):
    import platform
    import subprocess

    command = PodHost().command(models_dir=str(tmp_path / "not" / "yet"))
    output = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True)
    fact = PodHost().process(output.stdout.splitlines())
    assert fact["machine"] == platform.machine()
    assert fact["os"] == "debian12"  # this machine is Debian bookworm
    assert fact["disk_path"] == str(tmp_path)
    assert fact["init"] == Path("/proc/1/comm").read_text().strip()
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    assert fact["mem_total_kib"] == int(meminfo["MemTotal"].split()[0])
    disk = os.statvfs(tmp_path)
    assert abs(fact["disk_free_kib"] - disk.f_bavail * disk.f_frsize // 1024) < 2**20  # 1 GiB
    system = subprocess.run(
        ["python3", "-c", "import sys; print(*sys.version_info[:3])"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert fact["python"] == tuple(int(part) for part in system.stdout.split())


def test_host_fact_without_python():
    assert PodHost().process([*HOST_OUTPUT[:-1], "python="])["python"] is None


def test_host_fact_reads_prerelease_python_and_refuses_garbage():
    assert PodHost().process([*HOST_OUTPUT[:-1], "python=3.13.0rc1"])["python"] == (3, 13, 0)
    with pytest.raises(FactProcessError, match="not a version"):
        PodHost().process([*HOST_OUTPUT[:-1], "python=unknown"])


def plan(**data):
    return build_plan(load_settings(data, {}), GpuReport())


def test_enough_of_everything_passes():
    assert shortfalls(plan(), PodHost().process(HOST_OUTPUT)) == []


def test_disk_shortfall_says_by_how_much():
    host = PodHost().process(HOST_OUTPUT)
    (problem,) = shortfalls(plan(enable_qwen_edit=True), host)
    assert problem.startswith("disk: ") and "10.0 GiB free" in problem and "short" in problem
    # Bytes already in place are not needed again.
    assert shortfalls(plan(enable_qwen_edit=True), host, 10**11) == []


def test_a_venv_that_holds_the_lock_needs_no_disk_again():
    wanted = plan(enable_qwen_edit=True)
    need = wanted.requirements
    # Free space for the models, not for the venv as well: only a fresh venv is refused.
    free_kib = (need.disk_bytes - need.stack_bytes // 2) // 1024
    host = PodHost().process([*HOST_OUTPUT[:2], f"disk_free_kib={free_kib}", *HOST_OUTPUT[3:]])
    (problem,) = shortfalls(wanted, host)
    assert problem.startswith("disk: ")
    assert shortfalls(wanted, host, stack_in_place=True) == []


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("mem_total_kib=1024000", "memory: 2000 MiB needed for memory mode none, 1000 MiB"),
        ("python=3.8.10", "python: python3 >= 3.10 needed, found 3.8.10"),
    ],
)
def test_memory_and_python_shortfalls(line, message):
    key = line.split("=")[0]
    output = [row for row in HOST_OUTPUT if not row.startswith(key)] + [line]
    problems = shortfalls(plan(), PodHost().process(output))
    assert any(message in p for p in problems), problems
