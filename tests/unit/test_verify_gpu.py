"""verify's GPU check: the decision on real arch lists, and the probe run end to end in a
venv whose `torch` stands in for a GPU (the one part that cannot run here), answering as
PyPI's torch builds do on the devices RunPod rents."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from podforge.pod.verify import gpu_problem, gpus_compute, venv_problems

TORCH251 = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]
TORCH280 = ["sm_70", "sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]
# What torch 2.5.1 raises on an RTX 5090 (pytorch/pytorch#150733).
NO_KERNEL = (
    "CUDA error: no kernel image is available for execution on the device\n"
    "CUDA kernel errors might be asynchronously reported at some other API call, so the "
    "stacktrace below might be incorrect."
)
RTX_5090 = {"index": 0, "name": "NVIDIA GeForce RTX 5090", "mig": None}


def seen(arches: list[str], capability: str, kernel: str = "ok", torch: str = "2.5.1+cu124"):
    return {
        "torch": torch,
        "cuda": "12.4" if torch.startswith("2.5") else "12.8",
        "devices": 1,
        "name": "NVIDIA GeForce RTX 5090",
        "capability": capability,
        "arches": arches,
        "kernel": kernel,
    }


def test_a_blackwell_gpu_under_torch25_is_named_with_the_stack_that_would_run():
    problem = gpu_problem(RTX_5090, seen(TORCH251, "12.0", NO_KERNEL), "torch25-cu124")
    assert problem == (
        "NVIDIA GeForce RTX 5090 (sm_120) has no kernels in torch 2.5.1+cu124 (CUDA 12.4, the"
        " torch25-cu124 stack), which carries sm_50 sm_60 sm_70 sm_75 sm_80 sm_86 sm_90;"
        " torch28-cu128 would run: deploy with STACK_PROFILE=auto"
    )


@pytest.mark.parametrize(
    ("arches", "capability", "torch"),
    [
        (TORCH280, "12.0", "2.8.0+cu128"),  # RTX 5090
        (TORCH280, "10.0", "2.8.0+cu128"),  # B200
        (TORCH251, "8.9", "2.5.1+cu124"),  # RTX 4090
        (TORCH251, "9.0", "2.5.1+cu124"),  # H100
    ],
)
def test_a_device_its_torch_has_kernels_for_computes(arches, capability, torch):
    assert gpu_problem(RTX_5090, seen(arches, capability, torch=torch), "x") is None


def test_a_kernel_that_fails_where_the_arch_list_says_it_should_run_is_named():
    problem = gpu_problem(
        RTX_5090,
        seen(
            TORCH280,
            "12.0",
            "CUDA error: an illegal memory access was encountered",
            torch="2.8.0+cu128",
        ),
        "torch28-cu128",
    )
    assert problem == (
        "a test kernel failed on NVIDIA GeForce RTX 5090 (sm_120) under torch 2.8.0+cu128"
        " (CUDA 12.8, the torch28-cu128 stack): CUDA error: an illegal memory access was"
        " encountered"
    )


def test_no_device_visible_is_named():
    problem = gpu_problem(RTX_5090, {"torch": "2.8.0+cpu", "cuda": None, "devices": 0}, "x")
    assert problem is not None and problem.startswith(
        "torch 2.8.0+cpu sees no CUDA device for NVIDIA GeForce RTX 5090"
    )


# A `torch` module answering as the real one does for one device; the probe imports it.
STAND_IN = """
import os

__version__ = {version!r}


class version:
    cuda = {cuda!r}


class _Cuda:
    def is_available(self):
        return os.environ.get("CUDA_VISIBLE_DEVICES") == "GPU-5090"

    def device_count(self):
        return 1

    def get_device_capability(self, index):
        return (12, 0)

    def get_device_name(self, index):
        return "NVIDIA GeForce RTX 5090"

    def get_arch_list(self):
        return {arches!r}

    def synchronize(self, index):
        pass


cuda = _Cuda()
float16 = "float16"


class _Tensor:
    def __init__(self, value):
        self.value = value

    def __matmul__(self, other):
        return _Tensor(self.value * other.value * 256)

    def __sub__(self, number):
        return _Tensor(self.value - number)

    def __getitem__(self, index):
        return self

    def __float__(self):
        return float(self.value)


def full(shape, value, device, dtype):
    if {fails!r}:
        raise RuntimeError({error!r})
    return _Tensor(value)


def relu(tensor):
    return _Tensor(max(tensor.value, 0.0))
"""


def stand_in_venv(tmp_path: Path, torch: str, arches: list[str], fails: bool) -> Path:
    """A venv whose python imports the stand-in torch (a wrapper: the probe runs it as a
    program, as it runs the pod's venv python)."""
    site = tmp_path / "site"
    (site / "torch").mkdir(parents=True)
    (site / "torch" / "__init__.py").write_text(
        STAND_IN.format(
            version=torch,
            cuda=torch[-3:-1] + "." + torch[-1],
            arches=arches,
            fails=fails,
            error=NO_KERNEL,
        )
    )
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\nPYTHONPATH={site} exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    return venv


PLAN = {
    "stack": "torch25-cu124",
    "gpus": [RTX_5090],
    "comfyui": [{"device": 0, "args": ["--normalvram"], "cuda_visible_devices": "GPU-5090"}],
}


def test_the_probe_finds_a_5090_under_torch25(tmp_path, capsys):
    venv = stand_in_venv(tmp_path, "2.5.1+cu124", TORCH251, fails=True)
    (problem,) = gpus_compute(PLAN, venv)
    assert problem.startswith(
        "comfyui-0: NVIDIA GeForce RTX 5090 (sm_120) has no kernels in torch 2.5.1+cu124"
    )
    assert problem.endswith("torch28-cu128 would run: deploy with STACK_PROFILE=auto")
    assert "computes" not in capsys.readouterr().out


def test_the_probe_passes_a_5090_under_torch28_on_its_own_device(tmp_path, capsys):
    venv = stand_in_venv(tmp_path, "2.8.0+cu128", TORCH280, fails=False)
    assert gpus_compute({**PLAN, "stack": "torch28-cu128"}, venv) == []
    assert capsys.readouterr().out == (
        "verify: comfyui-0 computes on NVIDIA GeForce RTX 5090 (sm_120): torch 2.8.0+cu128,"
        " an fp16 matmul ran\n"
    )
    # The instance's CUDA_VISIBLE_DEVICES is what the probe runs under: another sees nothing.
    other = {**PLAN, "comfyui": [{**PLAN["comfyui"][0], "cuda_visible_devices": "GPU-other"}]}
    (problem,) = gpus_compute(other, venv)
    assert problem.startswith("comfyui-0: torch 2.8.0+cu128 sees no CUDA device")


def test_instances_on_the_cpu_are_skipped_and_said_so(tmp_path, capsys):
    venv = stand_in_venv(tmp_path, "2.8.0+cu128", TORCH280, fails=True)
    on_cpu = {**PLAN, "comfyui": [{**PLAN["comfyui"][0], "args": ["--cpu"]}]}
    assert gpus_compute(on_cpu, venv) == []
    assert capsys.readouterr().out == (
        "verify: the GPU check is skipped for comfyui-0: ComfyUI runs --cpu\n"
    )


def test_a_venv_changed_by_hand_is_named(tmp_path):
    wanted = tmp_path / "stack-venv.json"
    wanted.write_text(json.dumps({"einops": "0.8.1", "torch": "2.8.0", "podforge": "0.1.0+g1"}))
    installed = {"torch": "2.8.0+cu128", "podforge": "0.1.0+g1", "pip": "25.0"}
    assert venv_problems(wanted, installed) == [
        "the venv differs from its lock (2: einops missing, pip 25.0 not in the lock): deploy"
        " again, which syncs it back"
    ]
    del installed["pip"]
    assert venv_problems(wanted, {**installed, "einops": "0.8.1"}) == []


def test_each_module_a_feature_needs_is_imported_and_a_failure_named(tmp_path):
    # A real interpreter stands in for the venv's: one module imports, two do not.
    from podforge.pod.verify import imports_problems

    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    problems = imports_problems(["json", "mmcv_missing.ops", "zipfile.nope"], venv)
    assert problems == [
        f"mmcv_missing.ops does not import in {venv}: ModuleNotFoundError: No module named"
        " 'mmcv_missing'",
        f"zipfile.nope does not import in {venv}: ModuleNotFoundError: No module named"
        " 'zipfile.nope'; 'zipfile' is not a package",
    ]
    assert imports_problems(["json"], venv) == [] and imports_problems([], venv) == []
