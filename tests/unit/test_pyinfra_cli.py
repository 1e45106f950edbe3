"""The deploy and the facts through pyinfra's own CLI, @local, changing nothing here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO

PYINFRA = str(Path(sys.executable).parent / "pyinfra")


def _pyinfra(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYINFRA, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def test_dry_deploy_runs_clean_without_a_sandbox(fake_gpu_path, tmp_path):
    env = fake_gpu_path("rtx-4090") | {"PODFORGE_SANDBOX_DIR": str(tmp_path / "none")}
    result = _pyinfra(env, "@local", "deploy.py", "-y", "--dry")
    assert result.returncode == 0, result.stderr


def test_dry_deploy_stops_on_a_bad_setting(fake_gpu_path, tmp_path):
    env = fake_gpu_path("rtx-4090") | {
        "PODFORGE_SANDBOX_DIR": str(tmp_path / "none"),
        "STEADYDANCER_VARIANT": "fp32",
    }
    result = _pyinfra(env, "@local", "deploy.py", "-y", "--dry")
    assert result.returncode != 0
    assert "STEADYDANCER_VARIANT='fp32' is not accepted" in result.stderr + result.stdout


def test_gpu_fact_from_the_cli(fake_gpu_path, tmp_path):
    env = fake_gpu_path("h100-mig-1g10gb") | {"PODFORGE_SANDBOX_DIR": str(tmp_path / "none")}
    result = _pyinfra(env, "@local", "fact", "facts.gpu.NvidiaGpus")
    assert result.returncode == 0, result.stderr
    # pyinfra prints the fact data as JSON between its "-->" progress lines (on stderr).
    text = result.stdout + result.stderr
    facts = json.loads(text[text.index("{") : text.rindex("}") + 1])
    (device,) = facts["@local"]["devices"]
    assert (device["mig"], device["vram_mib"]) == ("1g.10gb", 9536)


def test_openmmlab_deploys_from_its_own_committed_lock(fake_gpu_path, tmp_path):
    # mmcv comes from the wheelhouse beside locks/torch25-cu124+openmmlab.txt: the host is
    # no longer refused, and the lock is found and current (preflight would name it).
    env = fake_gpu_path("rtx-4090") | {
        "PODFORGE_SANDBOX_DIR": str(tmp_path / "none"),
        "ENABLE_OPENMMLAB": "true",
    }
    result = _pyinfra(env, "@local", "deploy.py", "--dry")
    text = result.stdout + result.stderr
    assert result.returncode == 0, text
    assert "preflight refused" not in text
    assert "stack torch25-cu124 (OpenMMLab's mmcv 2.1.0 builds against torch 2.5.1 only)" in text
