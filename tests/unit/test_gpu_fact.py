"""The GPU fact on recorded real-world nvidia-smi outputs (sandbox/gpus/*)."""

from __future__ import annotations

import subprocess

import pytest

from conftest import run_probe
from facts.gpu import NvidiaGpus
from podforge.core.gpu import GpuProbeError, arch_runs, mig_memory_mib, parse_probe, sm

# profile -> [(name, usable VRAM MiB, MIG profile, CUDA_VISIBLE_DEVICES uuid)]
EXPECTED = {
    "rtx-4080-super": [
        (
            "NVIDIA GeForce RTX 4080 SUPER",
            16376,
            None,
            "GPU-2f1c6b5e-8a0d-4a7e-9c3b-1d2e3f4a5b6c",
        )
    ],
    "rtx-4090": [
        ("NVIDIA GeForce RTX 4090", 24564, None, "GPU-8d4e2a61-3c7b-5f19-a2d0-6e9b1c3f4d27")
    ],
    "rtx-3060": [
        ("NVIDIA GeForce RTX 3060", 12288, None, "GPU-51a0c3d2-77e4-9b18-0f6c-2a3d4e5f6071")
    ],
    "h100": [("NVIDIA H100 80GB HBM3", 81559, None, "GPU-a3f1e2d4-5b6c-7d8e-9f01-23456789abcd")],
    "rtx-5090": [
        ("NVIDIA GeForce RTX 5090", 32607, None, "GPU-5e0c9a1b-7f24-4d63-b8e5-2a91c07d3f58")
    ],
    "b200": [("NVIDIA B200", 183359, None, "GPU-b2000c4e-91d7-4a3f-8e26-5c70d1f9a8b3")],
    # A MIG slice is its own ~10 GB device, not an 80 GB one.
    "h100-mig-1g10gb": [
        (
            "NVIDIA H100 80GB HBM3 MIG 1g.10gb",
            9536,
            "1g.10gb",
            "MIG-0c2e5a7b-91d3-5f46-8a2b-3c4d5e6f7081",
        )
    ],
    "a100-mig-mixed": [
        (
            "NVIDIA A100-SXM4-40GB MIG 3g.20gb",
            19073,
            "3g.20gb",
            "MIG-1f2e3d4c-5b6a-5978-8695-a4b3c2d1e0f9",
        ),
        (
            "NVIDIA A100-SXM4-40GB MIG 2g.10gb",
            9536,
            "2g.10gb",
            "MIG-2a3b4c5d-6e7f-5081-9213-b4c5d6e7f809",
        ),
        (
            "NVIDIA A100-SXM4-40GB MIG 1g.5gb",
            4768,
            "1g.5gb",
            "MIG-3c4d5e6f-7081-5293-a4b5-c6d7e8f90a1b",
        ),
    ],
    "2x-a40": [
        ("NVIDIA A40", 46068, None, "GPU-0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9"),
        ("NVIDIA A40", 46068, None, "GPU-1b2c3d4e-5f60-7182-93a4-b5c6d7e8f90a"),
    ],
}


def _fact(lines: list[str]) -> dict:
    return NvidiaGpus().process(lines)


@pytest.mark.parametrize("profile", sorted(EXPECTED))
def test_recorded_profiles(profile, fake_gpu_path):
    fact = _fact(run_probe(fake_gpu_path(profile)))
    got = [(d["name"], d["vram_mib"], d["mig"], d["uuid"]) for d in fact["devices"]]
    assert got == EXPECTED[profile]
    assert [d["index"] for d in fact["devices"]] == list(range(len(got)))
    assert fact["warnings"] == []


def test_the_facts_one_command_reads_every_device(fake_gpu_path):
    # pyinfra runs the fact's command as one shell command on the pod: run it the same way.
    done = subprocess.run(
        ["sh", "-c", NvidiaGpus().command()],
        env=fake_gpu_path("2x-a40"),
        capture_output=True,
        text=True,
        check=True,
    )
    devices = _fact(done.stdout.splitlines())["devices"]
    assert [(d["name"], d["vram_mib"], d["mig"], d["uuid"]) for d in devices] == EXPECTED["2x-a40"]


def test_driver_and_compute_capability_are_read(fake_gpu_path):
    (device,) = _fact(run_probe(fake_gpu_path("h100")))["devices"]
    assert (device["driver_version"], device["compute_cap"], device["gpu_index"]) == (
        "550.90.07",
        "9.0",
        0,
    )


def test_driver_not_loaded_gives_no_devices_and_says_so(fake_gpu_path):
    fact = _fact(run_probe(fake_gpu_path("no-driver")))
    assert fact["devices"] == []
    (warning,) = fact["warnings"]
    assert "cannot talk to the NVIDIA driver (exit 9)" in warning


def test_no_nvidia_smi_gives_no_devices(fake_gpu_path):
    assert _fact(run_probe(fake_gpu_path(None))) == NvidiaGpus.default()
    assert NvidiaGpus.default() == {"devices": [], "warnings": []}


def _probe(query: list[str], listing: list[str], query_exit: int = 0) -> list[str]:
    return [
        "@@podforge-gpu query",
        *query,
        f"@@podforge-gpu exit {query_exit}",
        "@@podforge-gpu list",
        *listing,
        "@@podforge-gpu exit 0",
    ]


def test_not_available_fields_do_not_crash():
    lines = _probe(
        ["0, Tesla T4, 15360, [N/A], [Not Supported], [N/A]"],
        ["GPU 0: Tesla T4 (UUID: GPU-11111111-2222-3333-4444-555555555555)"],
    )
    (device,) = parse_probe(lines).devices
    assert (device.vram_mib, device.driver_version, device.compute_cap, device.mig) == (
        15360,
        None,
        None,
        None,
    )


def test_memory_with_units_is_read_as_mib():
    lines = _probe(["0, NVIDIA L4, 23034 MiB, 550.54.15, 8.9, [N/A]"], [])
    assert parse_probe(lines).devices[0].vram_mib == 23034


def test_memory_not_available_skips_the_gpu_with_a_warning():
    report = parse_probe(_probe(["0, NVIDIA L4, [N/A], 550.54.15, 8.9, [N/A]"], []))
    assert report.devices == ()
    assert "reports no memory size" in report.warnings[0]


def test_mig_enabled_without_slices_is_unused_with_a_warning():
    report = parse_probe(
        _probe(
            ["0, NVIDIA H100 80GB HBM3, 81559, 550.90.07, 9.0, Enabled"],
            ["GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-a)"],
        )
    )
    assert report.devices == ()
    assert "MIG enabled but no MIG slice" in report.warnings[0]


@pytest.mark.parametrize(
    ("profile", "mib"),
    [("1g.10gb", 9536), ("1g.5gb", 4768), ("3g.40gb", 38146), ("7g.80gb", 76293)],
)
def test_mig_slice_memory_is_a_lower_bound_from_the_profile(profile, mib):
    assert mig_memory_mib(profile) == mib


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (_probe(["0, NVIDIA L4, 23034"], []), "has 3 fields"),
        (_probe(['Field "compute_cap" is not a valid field to query.'], [], 2), "exit 2"),
        (_probe(["0, NVIDIA L4, lots, 550.54.15, 8.9, [N/A]"], []), "not a number of MiB"),
        (["@@podforge-gpu query", "0, NVIDIA L4"], "incomplete nvidia-smi probe output"),
    ],
)
def test_unexpected_output_is_a_clear_error(lines, message):
    with pytest.raises(GpuProbeError, match=message):
        parse_probe(lines)


# Real torch.cuda.get_arch_list() answers: PyPI's 2.5.1 (CUDA 12.4) and 2.8.0 (CUDA 12.8)
# wheels, and a nightly that also ships PTX (compute_120) and an arch-specific cubin.
TORCH251 = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]
TORCH280 = ["sm_70", "sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]
NIGHTLY = ["sm_80", "sm_90a", "sm_100", "compute_120"]


@pytest.mark.parametrize(
    ("arches", "compute_cap", "runs"),
    [
        (TORCH251, "7.5", True),  # T4
        (TORCH251, "8.9", True),  # RTX 4090 and L40S run sm_86's cubins
        (TORCH251, "9.0", True),  # H100
        (TORCH251, "10.0", False),  # B200: no kernel image
        (TORCH251, "12.0", False),  # RTX 5090
        (TORCH280, "12.0", True),
        (TORCH280, "12.1", True),  # GB10 runs sm_120's cubins
        (TORCH280, "10.0", True),
        (TORCH280, "10.3", True),  # B300
        (TORCH280, "6.0", False),  # Pascal was dropped from the CUDA 12.8 builds
        (TORCH280, "13.0", False),  # a new major runs no older cubin
        (NIGHTLY, "9.0", True),  # sm_90a is exactly sm_90's
        (["sm_90a"], "9.2", False),
        (NIGHTLY, "12.0", True),  # PTX, compiled by the driver
        (NIGHTLY, "13.0", True),
        (NIGHTLY, "7.5", False),
        ([], "8.0", False),
    ],
)
def test_a_build_runs_a_device_by_its_architectures(arches, compute_cap, runs):
    assert arch_runs(arches, compute_cap) is runs


def test_compute_cap_reads_as_torch_names_it():
    assert [sm(cap) for cap in ("12.0", "10.0", "8.9", "7.5")] == [
        "sm_120",
        "sm_100",
        "sm_89",
        "sm_75",
    ]
    with pytest.raises(GpuProbeError, match="not MAJOR.MINOR: '12'"):
        sm("12")
