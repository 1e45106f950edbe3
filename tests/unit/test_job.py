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


def _lines_when_done(job: Path) -> list[str]:
    waited = podforge_job("wait", str(job))
    assert waited.returncode == 0, waited.stdout
    return waited.stdout.splitlines()


def test_a_job_after_another_ones_downloads_starts_when_uv_is_past_them(tmp_path):
    # The stack's sync (uv's lines), held at points the test releases.
    stack = tmp_path / "stack"
    downloaded, compiled = tmp_path / "downloaded", tmp_path / "compiled"
    sync = (
        f"echo 'Resolved 151 packages in 40ms'; while [ ! -e {downloaded} ]; do sleep 0.05; done;"
        f" echo 'Prepared 151 packages in 1m 40s'; while [ ! -e {compiled} ]; do sleep 0.05; done"
    )
    assert podforge_job("start", str(stack), "--", "sh", "-c", sync).returncode == 0
    fetch = tmp_path / "fetch"
    started = podforge_job(
        "start", "--after-downloads", str(stack), str(fetch), "--", "echo", "ran"
    )
    assert started.returncode == 0, started.stderr
    time.sleep(1.0)
    # Still downloading: the fetch has not run.
    assert not (fetch / "exit").exists()
    downloaded.touch()
    # Past its downloads (still compiling): the fetch runs now.
    assert _lines_when_done(fetch) == [f"job: echo starts once {stack} has its downloads", "ran"]
    assert not (stack / "exit").exists()
    compiled.touch()
    assert podforge_job("wait", str(stack)).returncode == 0


@pytest.mark.parametrize("sync", ["exit 1", "echo 'Installed 3 packages in 4ms'; sleep 30"])
def test_a_job_after_another_ones_downloads_runs_once_it_ended_or_had_them_cached(tmp_path, sync):
    stack = tmp_path / "stack"
    assert podforge_job("start", str(stack), "--", "sh", "-c", sync).returncode == 0
    fetch = tmp_path / "fetch"
    podforge_job("start", "--after-downloads", str(stack), str(fetch), "--", "echo", "ran")
    assert _lines_when_done(fetch)[-1] == "ran"


def test_a_job_after_one_that_never_started_runs_after_the_wait_for_its_pid(tmp_path, monkeypatch):
    from podforge.pod import job as job_module

    monkeypatch.setattr(job_module, "STARTS_WITHIN", 0.3)
    began = time.monotonic()
    job_module._await_downloads(tmp_path / "never-started")
    assert 0.3 <= time.monotonic() - began < 5
