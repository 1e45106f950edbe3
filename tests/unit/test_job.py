"""`podforge job`: a command started detached by one deploy step and awaited by a later one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from podforge.pod.job import arrived, progress_line


def podforge_job(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "podforge", "job", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_started_job_runs_detached_and_wait_prints_its_lines_and_returns_its_code(tmp_path):
    job = tmp_path / "fetch-1"
    marker = tmp_path / "let-it-finish"
    script = f"echo first; while [ ! -e {marker} ]; do sleep 0.05; done; echo last; exit 3"
    started = podforge_job("start", str(job), "--", "sh", "-c", script)
    assert started.returncode == 0, started.stderr
    # `start` returned while the command still runs: it is detached, not awaited.
    assert not (job / "exit").exists()
    marker.touch()
    waited = podforge_job("wait", str(job))
    assert waited.stdout.splitlines() == ["first", "last"]
    assert waited.returncode == 3
    assert (job / "exit").read_text() == "3\n"


def test_a_job_killed_without_an_exit_code_fails_the_wait_naming_it(tmp_path):
    job = tmp_path / "fetch-2"
    assert podforge_job("start", str(job), "--", "sleep", "60").returncode == 0
    deadline = time.monotonic() + 30
    while not (job / "pid").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(int((job / "pid").read_text()), signal.SIGKILL)  # wrapper and command: a reboot
    waited = podforge_job("wait", str(job))
    assert waited.returncode == 1
    assert f"job: {job} ended without an exit code (killed?)" in waited.stdout


def test_a_command_that_cannot_start_is_named_in_the_log(tmp_path):
    job = tmp_path / "fetch-3"
    assert podforge_job("start", str(job), "--", str(tmp_path / "no-such-tool")).returncode == 0
    waited = podforge_job("wait", str(job))
    assert waited.returncode == 127
    assert f"job: {tmp_path / 'no-such-tool'} did not start" in waited.stdout


def test_arrived_counts_the_files_at_their_destinations(tmp_path: Path):
    (tmp_path / "a.safetensors").write_bytes(b"x" * 300)
    manifest = [
        {"dest": str(tmp_path / "a.safetensors"), "planned_bytes": 300},
        {"dest": str(tmp_path / "b.gguf"), "planned_bytes": 700},
    ]
    assert arrived(manifest) == (1, 300, 1000)


@pytest.mark.parametrize(
    ("args", "line"),
    [
        ((7, 18, 3.2e9, 29e9, None), "models: 7/18 files in place (3.2/29.0 GB)"),
        ((7, 18, 3.2e9, 29e9, 100e6), "models: 7/18 files in place (3.2/29.0 GB), ETA 4 min"),
        ((17, 18, 28e9, 29e9, 100e6), "models: 17/18 files in place (28.0/29.0 GB), ETA 10 s"),
        ((3, 18, 2e6, 0, 100e6), "models: 3/18 files in place (0.0 GB)"),  # sizes the hub's
    ],
)
def test_progress_says_how_many_files_are_in_and_when_the_rest_should_be(args, line):
    assert progress_line(*args) == line
