"""`python -m podforge plan` with a fake nvidia-smi first on PATH; `fetch` on bad manifests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO


def run_plan(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "podforge", "plan", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )


def test_plan_for_a_4080_super(fake_gpu_path):
    env = fake_gpu_path("rtx-4080-super") | {"ENABLE_STEADYDANCER": "true"}
    result = run_plan(env)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["phase"] == "pod"
    assert [(g["index"], g["name"], g["vram_mib"], g["mig"]) for g in plan["gpus"]] == [
        (0, "NVIDIA GeForce RTX 4080 SUPER", 16376, None)
    ]
    assert (plan["tier"], plan["memory_mode"]) == ("consumer", "sequential_cpu_offload")
    assert plan["comfyui"][0]["device"] == 0 and plan["comfyui"][0]["port"] == 8188
    # Behind the login: ComfyUI on 127.0.0.1:18188, nginx on 0.0.0.0:8188.
    assert plan["comfyui"][0]["args"] == [
        "--normalvram",
        "--listen",
        "127.0.0.1",
        "--port",
        "18188",
    ]
    assert (plan["comfyui"][0]["listen"], plan["comfyui"][0]["private_port"]) == ("0.0.0.0", 18188)
    assert plan["variants"]["steadydancer"]["precision"] == "gguf"
    assert plan["total_bytes"] == sum(m["planned_bytes"] for m in plan["models"]) > 0
    assert {"repo", "path", "dest", "bytes"} <= plan["models"][0].keys()


def test_plan_for_an_h100_mig_slice(fake_gpu_path):
    result = run_plan(fake_gpu_path("h100-mig-1g10gb"))
    plan = json.loads(result.stdout)
    assert [(g["vram_mib"], g["mig"]) for g in plan["gpus"]] == [(9536, "1g.10gb")]
    assert plan["comfyui"][0]["args"][0] == "--lowvram"


@pytest.mark.parametrize(
    ("gpu", "stack", "reason"),
    [
        ("rtx-4090", "torch25-cu124", "the default"),
        (
            "rtx-5090",
            "torch28-cu128",
            "torch25-cu124 has no kernels for NVIDIA GeForce RTX 5090 (sm_120)",
        ),
        ("b200", "torch28-cu128", "torch25-cu124 has no kernels for NVIDIA B200 (sm_100)"),
    ],
)
def test_plan_picks_the_stack_from_nvidia_smis_compute_cap(fake_gpu_path, gpu, stack, reason):
    plan = json.loads(run_plan(fake_gpu_path(gpu)).stdout)
    assert (plan["stack"], plan["stack_reason"]) == (stack, reason)


def test_plan_for_two_gpus_gives_two_instances(fake_gpu_path):
    plan = json.loads(run_plan(fake_gpu_path("2x-a40")).stdout)
    assert [c["port"] for c in plan["comfyui"]] == [8188, 8189]


def test_data_option_sets_a_setting(fake_gpu_path):
    plan = json.loads(run_plan(fake_gpu_path("h100"), "--data", "comfyui_port=9000").stdout)
    assert plan["comfyui"][0]["port"] == 9000


def test_no_gpu(fake_gpu_path):
    plan = json.loads(run_plan(fake_gpu_path(None), "--data", "enable_steadydancer=1").stdout)
    assert (plan["gpus"], plan["tier"]) == ([], "none")
    assert plan["variants"]["steadydancer"] == "deferred"


def test_driver_not_loaded_warns(fake_gpu_path):
    plan = json.loads(run_plan(fake_gpu_path("no-driver")).stdout)
    assert plan["gpus"] == [] and "NVIDIA driver" in plan["warnings"][0]


def test_bad_setting_exits_non_zero_with_one_line(fake_gpu_path):
    result = run_plan(fake_gpu_path("rtx-4090") | {"STEADYDANCER_VARIANT": "fp32"})
    assert result.returncode != 0
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "podforge: STEADYDANCER_VARIANT='fp32' is not accepted: "
        "expected one of auto, fp16, fp8 or gguf"
    ]


def test_plan_refusal_exits_non_zero(fake_gpu_path):
    env = fake_gpu_path("a100-mig-mixed") | {"ENABLE_STEADYDANCER": "true"}
    result = run_plan(env)
    assert result.returncode != 0
    assert "needs at least 6000 MiB" in result.stderr


def run_fetch(manifest: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "podforge", "fetch", str(manifest)],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "HF_ENDPOINT": "http://127.0.0.1:9"},
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("", "cannot read it as JSON"),
        ('{"repo": "a"}', "expected a JSON list of files"),
        ('["x"]', "entry 0: expected an object with dest and a source"),
        (
            '[{"repo": "a", "dest": "/m/x"}]',
            "entry 0: a Hugging Face file needs both repo and path",
        ),
        ('[{"civitai": 5, "url": "https://a/b", "dest": "/m/x"}]', "found civitai and url"),
        ('[{"repo": "a", "path": "x"}]', "entry 0: dest: Field required"),
        ('[{"repo": "a", "path": "x", "dest": "m/x"}]', "'dest' must be an absolute path"),
        (
            '[{"repo": "a", "path": "x", "dest": "/m/x", "bytes": "twelve"}]',
            "entry 0: bytes: Input should be a valid integer",
        ),
    ],
)
def test_bad_manifest_is_named_and_nothing_is_fetched(tmp_path, content, says):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(content)
    result = run_fetch(manifest)
    assert result.returncode == 1
    assert result.stderr.startswith(f"podforge fetch: FAILED manifest {manifest}")
    assert says in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]
