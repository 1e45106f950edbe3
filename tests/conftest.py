"""Shared test helpers: recorded nvidia-smi profiles and a fake nvidia-smi on PATH."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent

GPU_PROFILES = REPO / "sandbox" / "gpus"
FAKE_NVIDIA_SMI = REPO / "sandbox" / "fake-nvidia-smi"


@pytest.fixture
def fake_gpu_path(tmp_path: Path):
    """Return f(profile) -> environment with a fake nvidia-smi replaying that profile."""

    def environment(profile: str | None) -> dict[str, str]:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        link = bin_dir / "nvidia-smi"
        if profile is not None and not link.exists():
            link.symlink_to(FAKE_NVIDIA_SMI)
        env = {k: v for k, v in os.environ.items() if not k.isupper() or k in KEEP_ENV}
        env["PATH"] = f"{bin_dir}:/usr/bin:/bin"
        if profile is not None:
            env["PODFORGE_FAKE_GPU"] = str(GPU_PROFILES / profile)
        return env

    return environment


# The test process's own variables that podforge must not read as settings are dropped.
KEEP_ENV = {"HOME", "LANG", "LC_ALL", "TMPDIR", "USER"}


def run_probe(env: dict[str, str]) -> list[str]:
    from podforge.core.gpu import PROBE_COMMAND

    result = subprocess.run(
        ["sh", "-c", PROBE_COMMAND], env=env, capture_output=True, text=True, check=True
    )
    return result.stdout.splitlines()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_listening(
    argv: list[str], port: int, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a local server process; return it once it accepts connections on ``port``."""
    process = subprocess.Popen(argv, cwd=REPO, env=env)
    deadline = time.monotonic() + 10
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return process
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise RuntimeError(f"{argv[:3]} did not listen on {port}")
        time.sleep(0.05)


def wait_for(condition: Any, timeout: float = 60.0) -> None:
    """Until ``condition()`` holds; TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.05)


def s3_client(server: dict[str, Any], secret: str | None = None, read_timeout: float = 60) -> Any:
    """A boto3 client of the sandbox's S3 (``server``: control.start_s3's answer), set as
    r2sync sets its own: no CRC32 checksums, which R2 refuses."""
    # Imported here: the e2e tests load pyinfra's gevent patch before anything loads ssl.
    import boto3  # noqa: PLC0415
    from botocore.config import Config  # noqa: PLC0415

    return boto3.client(
        "s3",
        endpoint_url=server["url"],
        aws_access_key_id=server["access_key"],
        aws_secret_access_key=secret or server["secret_key"],
        region_name="auto",
        config=Config(
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            read_timeout=read_timeout,
        ),
    )


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The sandbox's S3 server behind its R2 gate, for one module; stopped by PID."""
    from sandbox import control  # noqa: PLC0415

    base = tmp_path_factory.mktemp("s3")
    (base / "logs").mkdir()
    server = control.start_s3(base, base / "logs")
    try:
        yield server
    finally:
        control.stop_process(server["gate_pid"])
        control.stop_process(server["pid"])
