"""Templates rendered as the tasks render them."""

from __future__ import annotations

import subprocess
from pathlib import Path

from podforge.core import services
from podforge.core.config import Settings
from tasks import render
from tasks.desired import MODEL_DIRS


def test_extra_model_paths_point_every_folder_at_the_volume():
    text = render("extra_model_paths.yaml.j2", models_dir="/workspace/models", folders=MODEL_DIRS)
    lines = text.splitlines()
    assert "    base_path: /workspace/models" in lines
    for folder in MODEL_DIRS:
        assert f"    {folder}: {folder}" in lines
    # ComfyUI's older folder names reach the same files.
    assert "    unet: diffusion_models" in lines and "    clip: text_encoders" in lines


def _container(tmp_path: Path, fetch_exit: int | None) -> str:
    """Run the rendered start.sh as a container would, with the boot deploy, the fetch's
    follower and supervisord replaced by scripts that log; its output. ``fetch_exit``: how
    the model fetch the boot phase started ends (None: it started none)."""
    settings = Settings(podforge_dir=str(tmp_path / "opt"))
    boot_fetch = services.boot_fetch(settings)
    fakes = {
        # The boot deploy: leaves the link to the fetch it started, as tasks/models.py does.
        f"{settings.podforge_dir}/deployer/bin/pyinfra": (
            f"mkdir -p {tmp_path}/job && ln -sfn {tmp_path}/job {boot_fetch}"
            if fetch_exit is not None
            else "true"
        ),
        # The follower: the fetch's lines come after supervisord has started.
        f"{settings.tools_dir}/bin/podforge": (
            f"sleep 0.5; echo \"follow $*\"; echo 'fetch: done'; exit {fetch_exit}"
        ),
        f"{tmp_path}/bin/supervisord": "echo supervisord serving; sleep 1",
    }
    for path, body in fakes.items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(f"#!/bin/sh\n{body}\n")
        Path(path).chmod(0o755)
    Path(boot_fetch).parent.mkdir(parents=True, exist_ok=True)
    Path(settings.podforge_dir, "deploy").mkdir()
    script = tmp_path / "start.sh"
    script.write_text(
        render(
            "start.sh.j2",
            settings=settings,
            boot_fetch=boot_fetch,
            manifest=services.manifest_path(settings),
        )
    )
    result = subprocess.run(
        ["sh", str(script)],
        env={"PATH": f"{tmp_path}/bin:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout


def test_start_sh_serves_while_the_boots_model_fetch_runs_and_reports_its_end(tmp_path):
    lines = _container(tmp_path, fetch_exit=0).splitlines()
    settings = Settings(podforge_dir=str(tmp_path / "opt"))
    follow = (
        f"follow job wait {services.boot_fetch(settings)}"
        f" --manifest {services.manifest_path(settings)}"
    )
    assert lines == ["supervisord serving", follow, "fetch: done"]


def test_start_sh_names_a_failed_boot_fetch(tmp_path):
    lines = _container(tmp_path, fetch_exit=3).splitlines()
    assert lines[0] == "supervisord serving"
    assert lines[-1] == (
        "start.sh: the model fetch FAILED (above); deploy again to fetch what is missing"
    )


def test_start_sh_follows_no_fetch_when_the_boot_started_none(tmp_path):
    assert _container(tmp_path, fetch_exit=None).splitlines() == ["supervisord serving"]


def test_start_sh_quotes_every_path_it_runs():
    # Settings refuse such a path (podforge/core/paths.py); the template quotes regardless.
    odd = Settings.model_construct(**{**Settings().model_dump(), "podforge_dir": "/opt/a b;x"})
    text = render("start.sh.j2", settings=odd, boot_fetch="/opt/a b;x/jobs/boot", manifest="/m")
    assert "cd '/opt/a b;x/deploy'\n" in text
    assert "PYINFRA_YES=1 '/opt/a b;x/deployer/bin/pyinfra' @local" in text
    assert "'/opt/a b;x/tools/bin/podforge' job wait '/opt/a b;x/jobs/boot'" in text
    subprocess.run(["sh", "-n"], input=text, text=True, check=True)
