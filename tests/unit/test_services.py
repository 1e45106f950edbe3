"""The pod's programs as data, rendered for supervisor and systemd, and checked by their own
tools where this machine has them (systemd-analyze verify)."""

from __future__ import annotations

import configparser
import shutil
import subprocess

import pytest

from conftest import run_probe
from podforge.core.config import Settings
from podforge.core.gpu import parse_probe
from podforge.core.plan import build_plan
from podforge.core.services import env_paths, generation_env, programs, r2_env, software_digest
from tasks import render

SOFTWARE = software_digest({"/workspace/ComfyUI": "a" * 40}, "numpy==1.26.4\n", [])


@pytest.fixture
def pod(fake_gpu_path):
    """Settings -> the plan for a pod with two A40s (the recorded nvidia-smi profile)."""
    report = parse_probe(run_probe(fake_gpu_path("2x-a40")))
    return lambda settings: build_plan(settings, report)


def texts(settings: Settings) -> dict[str, str]:
    paths = env_paths(settings)
    return {
        paths["generation"]: generation_env(settings),
        paths["comfyui_secrets"]: "",
        paths["r2"]: r2_env(settings),
    }


def test_one_comfyui_per_device_and_r2sync_when_on(pod):
    settings = Settings(enable_r2_sync=True, r2_endpoint="https://a.r2.cloudflarestorage.com")
    plan = pod(settings)
    found = {p.name: p for p in programs(settings, plan, texts(settings), SOFTWARE)}
    assert list(found) == ["comfyui-0", "comfyui-1", "r2sync"]
    for instance in plan.comfyui:
        program = found[f"comfyui-{instance.device}"]
        assert program.argv == ["/workspace/venv/bin/python", "main.py", *instance.args]
        assert program.environment["CUDA_VISIBLE_DEVICES"] == instance.cuda_visible_devices
        assert program.log == f"/workspace/logs/comfyui-{instance.device}.log"
    assert found["r2sync"].environment["R2_ENV_FILE"] == "/opt/podforge/secrets/r2.env"
    assert "r2sync" not in [p.name for p in programs(Settings(), plan, texts(Settings()), SOFTWARE)]


def test_a_changed_secret_changes_only_the_programs_that_read_it(pod):
    settings = Settings(enable_r2_sync=True, r2_endpoint="https://a.r2.cloudflarestorage.com")
    plan = pod(settings)
    before = {p.name: p for p in programs(settings, plan, texts(settings), SOFTWARE)}
    other = settings.model_copy(update={"r2_bucket": "another"})
    after = {p.name: p for p in programs(other, plan, texts(other), SOFTWARE)}
    assert after["r2sync"] != before["r2sync"]
    assert after["comfyui-0"] == before["comfyui-0"]


@pytest.mark.parametrize(
    "software",
    [
        software_digest({"/workspace/ComfyUI": "b" * 40}, "numpy==1.26.4\n", []),  # a pin
        software_digest({"/workspace/ComfyUI": "a" * 40}, "numpy==1.26.3\n", []),  # a lock
        software_digest(
            {"/workspace/ComfyUI": "a" * 40}, "numpy==1.26.4\n", ["flash-attn file:///f.whl"]
        ),  # a wheel beside the lock
    ],
)
def test_new_software_changes_comfyuis_section_alone(pod, software):
    # ComfyUI imports its node packs once, at start: a moved pin or a new lock restarts it.
    settings = Settings(enable_r2_sync=True, r2_endpoint="https://a.r2.cloudflarestorage.com")
    plan = pod(settings)
    before = {p.name: p for p in programs(settings, plan, texts(settings), SOFTWARE)}
    after = {p.name: p for p in programs(settings, plan, texts(settings), software)}
    assert software != SOFTWARE
    assert after["comfyui-0"] != before["comfyui-0"] and after["r2sync"] == before["r2sync"]


def test_the_shell_command_sources_env_files_and_keeps_argv_clean(tmp_path, pod):
    settings = Settings(podforge_dir=str(tmp_path), hf_token="hf_secret")
    (tmp_path / "generation.env").write_text(generation_env(settings))
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "comfyui.env").write_text("HF_TOKEN='hf_secret'\n")
    program = programs(settings, pod(settings), texts(settings), SOFTWARE)[0]
    probe = program.model_copy(
        update={"argv": ["/bin/sh", "-c", 'echo "$STEADYDANCER_SEED $HF_TOKEN $0 $1"', "a", "b"]}
    )
    out = subprocess.run(["sh", "-c", probe.shell_command()], capture_output=True, text=True)
    assert out.stdout.split() == ["106060", "hf_secret", "a", "b"]


def test_the_supervisor_section_restarts_with_backoff_and_stops_the_group(pod):
    settings = Settings()
    program = programs(settings, pod(settings), texts(settings), SOFTWARE)[1]
    parsed = configparser.RawConfigParser()
    parsed.read_string(render("supervisor-program.conf.j2", program=program))
    section = parsed["program:comfyui-1"]
    assert section["command"] == program.shell_command()
    assert section["command"].endswith(program.command_line)
    assert section["stopasgroup"] == "true" and section["autorestart"] == "true"
    assert int(section["startretries"]) > 1 and section["stdout_logfile_backups"] == "5"
    assert (
        f'CUDA_VISIBLE_DEVICES="{program.environment["CUDA_VISIBLE_DEVICES"]}"'
        in section["environment"]
    )


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="bin/setup installs systemd")
def test_systemd_units_pass_systemd_analyze_verify(tmp_path, pod):
    venv, tools = tmp_path / "venv", tmp_path / "podforge" / "tools"
    for tool in (venv / "bin" / "python", tools / "bin" / "podforge"):
        tool.parent.mkdir(parents=True, exist_ok=True)
        tool.symlink_to(shutil.which("true"))
    settings = Settings(
        venv_dir=str(venv),
        podforge_dir=str(tmp_path / "podforge"),
        comfyui_dir=str(tmp_path),
        workspace_dir=str(tmp_path),
        enable_r2_sync=True,
        r2_endpoint="https://a.r2.cloudflarestorage.com",
    )
    units = []
    for program in programs(settings, pod(settings), texts(settings), SOFTWARE):
        unit = tmp_path / f"podforge-{program.name}.service"
        unit.write_text(render("systemd.service.j2", program=program))
        units.append(str(unit))
    done = subprocess.run(
        ["systemd-analyze", "verify", *units], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "podforge" not in done.stderr, done.stderr  # no warning about our units
