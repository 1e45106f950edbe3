"""The plan on plain tables: thresholds at every boundary, overrides, multi-GPU, MIG, no GPU."""

from __future__ import annotations

import sys

import pytest
from pydantic import ValidationError

from podforge.core.comfyui_args import KNOWN_FLAGS
from podforge.core.config import Settings, load_settings
from podforge.core.gpu import GpuDevice, GpuReport
from podforge.core.plan import PlanError, build_plan
from podforge.core.stacks import FLASH_ATTN_SHA256, STACK_PROFILES
from sandbox.repos import upstream_tree


def gpu(vram_mib: int, index: int = 0, mig: str | None = None) -> GpuDevice:
    return GpuDevice(
        index=index,
        gpu_index=index,
        name=f"GPU with {vram_mib} MiB",
        vram_mib=vram_mib,
        mig=mig,
        uuid=f"GPU-{index}",
        driver_version="550.54.15",
        compute_cap="8.9",
    )


def plan_for(*vrams: int, **settings):
    wanted = load_settings({k: v for k, v in settings.items()}, {})
    return build_plan(wanted, GpuReport(devices=tuple(gpu(v, i) for i, v in enumerate(vrams))))


# Behind the login (the default): ComfyUI on 127.0.0.1, its port + 10000; nginx on 8188.
CP311_WHEEL = "flash_attn-2.7.4.post1+cu12torch2.5cxx11abiFALSE-cp311-cp311-linux_x86_64.whl"
LISTEN = ["--listen", "127.0.0.1", "--port", "18188"]


@pytest.mark.parametrize(
    ("vram", "tier", "memory_mode", "vram_args"),
    [
        (81559, "datacenter", "full", ["--highvram"]),
        (48000, "datacenter", "full", ["--highvram"]),
        (47999, "prosumer", "model_cpu_offload", []),
        (24000, "prosumer", "model_cpu_offload", []),
        (23999, "prosumer", "sequential_cpu_offload", ["--normalvram"]),
        (20000, "prosumer", "sequential_cpu_offload", ["--normalvram"]),
        (19999, "consumer", "sequential_cpu_offload", ["--normalvram"]),
        (12000, "consumer", "sequential_cpu_offload", ["--normalvram"]),
        (11999, "consumer", "sequential_cpu_offload", ["--lowvram"]),
        (8000, "consumer", "sequential_cpu_offload", ["--lowvram"]),
        (7999, "consumer", "sequential_cpu_offload", ["--lowvram", "--cpu-vae"]),
        (4096, "consumer", "sequential_cpu_offload", ["--lowvram", "--cpu-vae"]),
    ],
)
def test_vram_threshold_table(vram, tier, memory_mode, vram_args):
    plan = plan_for(vram)
    assert (plan.tier, plan.memory_mode) == (tier, memory_mode)
    (instance,) = plan.comfyui
    assert instance.args == [*vram_args, *LISTEN]
    assert (instance.tier, instance.memory_mode, instance.port) == (tier, memory_mode, 8188)


@pytest.mark.parametrize(
    ("vram", "precision", "quant"),
    [
        (81559, "fp16", None),
        (40000, "fp16", None),
        (39999, "fp8", None),
        (20000, "fp8", None),
        # The table's q4_k_m / q3_k_m / q2_k are not published: the nearest is q5_k_m.
        (19999, "gguf", "q5_k_m"),
        (15000, "gguf", "q5_k_m"),
        (6000, "gguf", "q5_k_m"),
    ],
)
def test_steadydancer_precision_table(vram, precision, quant):
    variant = plan_for(vram, enable_steadydancer=True).variants["steadydancer"]
    assert (variant["precision"], variant["quant"]) == (precision, quant)


@pytest.mark.parametrize(
    ("vram", "table_quant"),
    [
        (19999, "q4_k_m"),
        (15000, "q4_k_m"),
        (14999, "q3_k_m"),
        (11000, "q3_k_m"),
        (10999, "q2_k"),
        (6000, "q2_k"),
    ],
)
def test_gguf_quant_boundaries_are_named_in_the_warning(vram, table_quant):
    plan = plan_for(vram, enable_steadydancer=True)
    assert any(f"quant {table_quant} is not published" in w for w in plan.warnings)


def test_steadydancer_is_refused_below_6000_mib():
    with pytest.raises(PlanError, match="at least 6000 MiB.*has 5999 MiB"):
        plan_for(5999, enable_steadydancer=True)
    assert plan_for(5999).comfyui[0].args[:2] == ["--lowvram", "--cpu-vae"]


def test_published_quant_is_taken_without_warning():
    plan = plan_for(16376, enable_steadydancer=True, steadydancer_gguf_model="q6_k")
    assert plan.variants["steadydancer"]["quant"] == "q6_k"
    assert plan.warnings == []
    assert any(
        m.dest.endswith("Q6_K_fix_5d_tensor_from_fp8_e4m3fn_scaled_KJ.gguf") for m in plan.models
    )


def test_explicit_variant_overrides_the_table():
    variant = plan_for(16376, enable_steadydancer=True, steadydancer_variant="fp8")
    assert variant.variants["steadydancer"]["precision"] == "fp8"
    assert any("fp8_e4m3fn_scaled_KJ" in m.dest for m in variant.models)
    gguf_on_big = plan_for(81559, enable_steadydancer=True, steadydancer_variant="gguf")
    assert gguf_on_big.variants["steadydancer"]["precision"] == "gguf"


def test_tier_and_memory_mode_overrides():
    plan = plan_for(
        16376,
        enable_steadydancer=True,
        gpu_tier="datacenter",
        gpu_memory_mode="full",
        steadydancer_gpu_memory_mode="model_cpu_offload",
    )
    assert (plan.tier, plan.memory_mode) == ("datacenter", "full")
    assert plan.variants["steadydancer"]["memory_mode"] == "model_cpu_offload"
    # The VRAM flags still follow the table unless COMFYUI_ARGS names a VRAM mode.
    assert plan.comfyui[0].args[0] == "--normalvram"


def test_comfyui_args_vram_mode_replaces_the_table():
    plan = plan_for(7000, comfyui_args="--highvram --use-sage-attention")
    assert plan.comfyui[0].args == ["--highvram", "--use-sage-attention", *LISTEN]


def test_comfyui_args_without_vram_mode_add_to_the_table():
    plan = plan_for(16376, comfyui_args="--reserve-vram 1.5")
    assert plan.comfyui[0].args == ["--normalvram", "--reserve-vram", "1.5", *LISTEN]


def test_listen_and_port_are_always_set():
    plan = plan_for(24564, comfyui_listen="127.0.0.5", comfyui_port=9000)
    (instance,) = plan.comfyui
    assert instance.args == ["--listen", "127.0.0.1", "--port", "19000"]
    assert (instance.listen, instance.port, instance.private_port) == ("127.0.0.5", 9000, 19000)
    assert "nginx" in plan.system_packages
    assert not [w for w in plan.warnings if "comfyui_auth" in w]


def test_without_the_login_comfyui_listens_itself_and_the_plan_warns():
    plan = plan_for(24564, comfyui_listen="0.0.0.0", comfyui_auth="off")
    (instance,) = plan.comfyui
    assert instance.args == ["--listen", "0.0.0.0", "--port", "8188"]
    assert instance.private_port is None and "nginx" not in plan.system_packages
    assert (
        "comfyui_auth is off: ComfyUI on 0.0.0.0 ports 8188 answers anyone who reaches them "
        "(queue work, upload files, run node code): turn COMFYUI_AUTH back on"
    ) in plan.warnings


def test_multi_gpu_one_instance_each_and_variants_for_the_smallest():
    plan = plan_for(81559, 16376, enable_steadydancer=True)
    assert [(c.device, c.port, c.cuda_visible_devices) for c in plan.comfyui] == [
        (0, 8188, "GPU-0"),
        (1, 8189, "GPU-1"),
    ]
    assert plan.comfyui[0].args[0] == "--highvram"
    assert plan.comfyui[1].args[0] == "--normalvram"
    assert plan.variants["steadydancer"]["precision"] == "gguf"  # the 16 GB card decides
    assert plan.tier == "consumer"


def test_mig_slice_plans_as_its_own_device():
    slice_ = gpu(9536, mig="1g.10gb").model_copy(update={"uuid": "MIG-abc"})
    plan = build_plan(
        load_settings({"enable_steadydancer": True}, {}), GpuReport(devices=(slice_,))
    )
    assert plan.comfyui[0].cuda_visible_devices == "MIG-abc"
    assert plan.comfyui[0].args[0] == "--lowvram"
    assert plan.tier == "consumer"


def test_no_gpu_defers_variants_to_boot():
    report = GpuReport(warnings=("nvidia-smi is installed but cannot talk to the driver",))
    plan = build_plan(
        load_settings({"enable_steadydancer": True, "enable_wan22": True}, {}), report
    )
    assert (plan.gpus, plan.tier) == ([], "none")
    # Still one ComfyUI, on the CPU, and the plan says so.
    (cpu,) = plan.comfyui
    assert cpu.args == ["--cpu", *LISTEN]
    assert cpu.cuda_visible_devices is None
    assert plan.variants == {"steadydancer": "deferred", "wan22": "deferred"}
    # Only the files every variant needs are planned now.
    models_dir = Settings().models_dir + "/"
    assert {m.dest.removeprefix(models_dir).split("/")[0] for m in plan.models} == {
        "text_encoders",
        "vae",
        "clip_vision",
        "loras",
        "detection",
    }
    assert plan.warnings == [
        *report.warnings,
        "no GPU found: one ComfyUI runs on the CPU (--cpu), which is slow for video models",
    ]


def test_image_phase_plans_no_models():
    plan = build_plan(
        load_settings({"phase": "image", "enable_steadydancer": True}, {}), GpuReport()
    )
    assert plan.models == [] and plan.total_bytes == 0


def test_each_destination_is_planned_once_and_sized():
    umt5_dest = "text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors"
    plan = plan_for(24564, enable_steadydancer=True, enable_wan22=True)
    umt5 = next(m for m in plan.models if m.dest.endswith(umt5_dest))
    assert umt5.bytes == 6_735_906_897 and umt5.feature == "wan22"
    # SteadyDancer's WanVideoWrapper loaders take kijai's encoder, not Comfy-Org's.
    steadydancer = plan_for(24564, enable_steadydancer=True)
    assert not any(m.dest.endswith(umt5_dest) for m in steadydancer.models)
    # A custom model at a catalog destination replaces the catalog's file there.
    mine = {"repo": "me/umt5", "path": "umt5.safetensors", "dest": umt5_dest, "bytes": 7}
    plan = plan_for(24564, enable_wan22=True, custom_models=[mine])
    dests = [m.dest for m in plan.models]
    assert len(dests) == len(set(dests))
    umt5 = next(m for m in plan.models if m.dest.endswith(umt5_dest))
    assert (umt5.repo, umt5.bytes, umt5.feature) == ("me/umt5", 7, "custom")
    assert plan.total_bytes == sum(m.planned_bytes for m in plan.models)


def test_models_dir_setting_moves_every_destination():
    plan = plan_for(24564, enable_dwpose=True, models_dir="/runpod-volume/models")
    assert plan.models and all(m.dest.startswith("/runpod-volume/models/") for m in plan.models)


def test_custom_models_join_the_manifest():
    custom = {
        "repo": "me/loras",
        "path": "a.safetensors",
        "dest": "loras/a.safetensors",
        "bytes": 123,
    }
    plan = plan_for(24564, custom_models=[custom])
    (model,) = plan.models
    assert (model.feature, model.repo, model.bytes) == ("custom", "me/loras", 123)


def test_civitai_and_url_models_join_the_manifest_and_an_unverified_url_is_warned_of():
    lora = {"civitai": 1234567, "dest": "loras/style.safetensors"}
    checked = {"url": "https://example.com/a.pth?sig=s3cret", "sha256": "A" * 64, "dest": "x/a"}
    unchecked = {"url": "https://example.com/b.pth?token=s3cret", "dest": "x/b"}
    plan = plan_for(24564, custom_models=[lora, checked, unchecked])
    by_dest = {
        model.dest.rsplit("/", 2)[-2] + "/" + model.dest.rsplit("/", 1)[-1]: model
        for model in plan.models
    }
    assert by_dest["loras/style.safetensors"].source_id == "civitai:1234567:"
    assert by_dest["x/a"].sha256 == "a" * 64
    warned = [w for w in plan.warnings if "has no sha256" in w]
    assert warned == [
        "custom_models: https://example.com/b.pth has no sha256: checked by size only, then "
        "stamped with the sha256 its download computed (unverified; add sha256 to verify it)"
    ]


@pytest.fixture(scope="module")
def comfyui_parser():
    """ComfyUI's own argument parser (comfy/cli_args.py at the pin: standard library only)."""
    sys.path.insert(0, str(upstream_tree("ComfyUI")))
    try:
        from comfy.cli_args import parser

        yield parser
    finally:
        sys.path.remove(str(upstream_tree("ComfyUI")))


@pytest.mark.parametrize("vram", [None, 4000, 7999, 8000, 12000, 20000, 24000, 48000, 81559])
@pytest.mark.parametrize(
    "user_args", ["", "--use-flash-attention --disable-smart-memory", "--cpu", "--reserve-vram 2"]
)
def test_comfyuis_own_parser_takes_every_flag_set_the_plan_gives(vram, user_args, comfyui_parser):
    # The memory flags are decided here; the sandbox's pods (no GPU) run --cpu instead.
    if vram is None:  # no GPU found: one ComfyUI on the CPU
        plan = build_plan(load_settings({"comfyui_args": user_args}, {}), GpuReport())
    else:
        plan = plan_for(vram, comfyui_args=user_args)
    assert plan.comfyui
    for instance in plan.comfyui:
        parsed = comfyui_parser.parse_args(instance.args)  # an unknown flag exits 2
        assert parsed.port == instance.private_port


@pytest.mark.parametrize("vram", [4000, 7999, 8000, 12000, 20000, 24000, 48000, 81559])
@pytest.mark.parametrize("user_args", ["", "--use-flash-attention --disable-smart-memory"])
def test_only_real_comfyui_flags_are_ever_emitted(vram, user_args):
    for instance in plan_for(vram, comfyui_args=user_args).comfyui:
        flags = [a for a in instance.args if a.startswith("--")]
        assert set(flags) <= set(KNOWN_FLAGS)


# TurboDiffusion needs torch >= 2.7: never on the torch 2.5.1 stack.
def test_turbodiffusion_picks_the_torch28_stack():
    plan = plan_for(81559, enable_turbodiffusion=True)
    assert (plan.stack, plan.stack_reason) == ("torch28-cu128", "TurboDiffusion needs torch >= 2.7")
    assert plan_for(81559).stack == "torch25-cu124"


def test_turbodiffusion_on_torch25_is_refused_with_the_reason():
    with pytest.raises(PlanError, match="torch 2.5.1 but TurboDiffusion needs torch >= 2.7"):
        plan_for(81559, enable_turbodiffusion=True, stack_profile="torch25-cu124")


def test_turbodiffusion_with_openmmlab_is_refused():
    with pytest.raises(PlanError, match="OpenMMLab"):
        plan_for(81559, enable_turbodiffusion=True, enable_openmmlab=True)


@pytest.mark.parametrize(
    ("vrams", "settings", "kernels"),
    [
        # A GPU serves: mmcv's CUDA ops for every architecture the profile's torch carries,
        # so one wheel serves every GPU of the fleet.
        ((24564,), {}, "5.0;6.0;7.0;7.5;8.0;8.6;9.0"),
        # No GPU, or ComfyUI told --cpu (the sandbox): CPU ops, no nvcc.
        ((), {}, None),
        ((24564,), {"comfyui_args": ["--cpu"]}, None),
        # An image is built without a GPU for pods that have one.
        ((), {"phase": "image"}, "5.0;6.0;7.0;7.5;8.0;8.6;9.0"),
    ],
)
def test_openmmlab_builds_mmcv_with_the_kernels_of_who_will_serve(vrams, settings, kernels):
    plan = plan_for(*vrams, enable_openmmlab=True, **settings)
    stack = plan.python_stack
    (mmcv,) = stack.built
    assert (mmcv.name, mmcv.version, mmcv.against) == ("mmcv", "2.1.0", ["torch"])
    assert mmcv.environment.get("TORCH_CUDA_ARCH_LIST") == kernels
    assert mmcv.environment["MMCV_WITH_OPS"] == "1"
    assert stack.needs_nvcc is (kernels is not None)
    assert stack.feature == "openmmlab" and "mmcv.ops" in stack.imports
    assert {"build-essential", "python3-dev"} <= set(plan.system_packages)
    cpu_only = any("mmcv's ops are built for the CPU only" in w for w in plan.warnings)
    assert cpu_only is (kernels is None)


def test_without_openmmlab_nothing_is_built_and_no_compiler_installed():
    plan = plan_for(24564)
    assert (plan.python_stack.built, plan.python_stack.feature) == ([], None)
    assert not plan.python_stack.needs_nvcc and "build-essential" not in plan.system_packages


def test_openmmlab_keeps_the_torch25_stack():
    assert plan_for(24564, enable_openmmlab=True).stack == "torch25-cu124"
    with pytest.raises(PlanError, match="mmcv 2.1.0"):
        plan_for(24564, enable_openmmlab=True, stack_profile="torch28-cu128")


# What RunPod rents, as nvidia-smi names them, with their compute capability.
T4 = ("Tesla T4", "7.5")
A100 = ("NVIDIA A100-SXM4-80GB", "8.0")
RTX_4090 = ("NVIDIA GeForce RTX 4090", "8.9")
H100 = ("NVIDIA H100 80GB HBM3", "9.0")
B200 = ("NVIDIA B200", "10.0")
RTX_5090 = ("NVIDIA GeForce RTX 5090", "12.0")
RTX_PRO_6000 = ("NVIDIA RTX PRO 6000 Blackwell Server Edition", "12.0")
GB10 = ("NVIDIA GB10", "12.1")
P100 = ("Tesla P100-PCIE-16GB", "6.0")


def plan_on(*cards: tuple[str, str], **settings):
    devices = tuple(
        GpuDevice(
            index=i,
            gpu_index=i,
            name=name,
            vram_mib=32607,
            mig=None,
            uuid=f"GPU-{i}",
            driver_version="570.172.08",
            compute_cap=cap,
        )
        for i, (name, cap) in enumerate(cards)
    )
    return build_plan(load_settings(settings, {}), GpuReport(devices=devices))


@pytest.mark.parametrize(
    ("cards", "stack", "reason"),
    [
        ((T4,), "torch25-cu124", "the default"),
        ((A100, A100), "torch25-cu124", "the default"),
        ((RTX_4090,), "torch25-cu124", "the default"),  # sm_89 runs sm_86's kernels
        ((H100,), "torch25-cu124", "the default"),
        ((P100,), "torch25-cu124", "the default"),
        ((), "torch25-cu124", "the default"),
        (
            (RTX_5090,),
            "torch28-cu128",
            "torch25-cu124 has no kernels for NVIDIA GeForce RTX 5090 (sm_120)",
        ),
        ((B200,), "torch28-cu128", "torch25-cu124 has no kernels for NVIDIA B200 (sm_100)"),
        (
            (RTX_PRO_6000,),
            "torch28-cu128",
            "torch25-cu124 has no kernels for NVIDIA RTX PRO 6000 Blackwell Server Edition"
            " (sm_120)",
        ),
        ((GB10,), "torch28-cu128", "torch25-cu124 has no kernels for NVIDIA GB10 (sm_121)"),
        # A Blackwell beside an older card: the one profile that runs both.
        (
            (H100, RTX_5090),
            "torch28-cu128",
            "torch25-cu124 has no kernels for NVIDIA GeForce RTX 5090 (sm_120)",
        ),
    ],
)
def test_the_stack_follows_the_gpus(cards, stack, reason):
    plan = plan_on(*cards)
    assert (plan.stack, plan.stack_reason) == (stack, reason)
    assert plan.python_stack.profile == stack
    assert f"stack {stack} ({reason})" in plan.summary()


def test_the_summary_names_each_device_and_its_architecture():
    assert plan_on(RTX_5090).summary() == (
        "NVIDIA GeForce RTX 5090 (32607 MiB, sm_120): tier prosumer; stack torch28-cu128"
        " (torch25-cu124 has no kernels for NVIDIA GeForce RTX 5090 (sm_120))"
    )


def test_a_stack_the_gpu_cannot_run_is_refused_naming_why():
    with pytest.raises(PlanError) as refused:
        plan_on(RTX_5090, stack_profile="torch25-cu124")
    assert str(refused.value) == (
        "STACK_PROFILE=torch25-cu124 cannot run on NVIDIA GeForce RTX 5090 (sm_120): torch 2.5.1"
        " carries sm_50 sm_60 sm_70 sm_75 sm_80 sm_86 sm_90; torch28-cu128 would run"
        " (set STACK_PROFILE=auto or torch28-cu128)"
    )
    assert plan_on(RTX_5090, stack_profile="torch28-cu128").stack_reason == "STACK_PROFILE"


def test_a_pascal_card_is_refused_the_cuda_12_8_stack():
    with pytest.raises(PlanError, match=r"Tesla P100-PCIE-16GB \(sm_60\): torch 2.8.0 carries"):
        plan_on(P100, stack_profile="torch28-cu128")
    with pytest.raises(PlanError, match=r"torch28-cu128 cannot run on Tesla P100"):
        plan_on(P100, enable_turbodiffusion=True)


def test_gpus_no_single_stack_runs_are_refused():
    with pytest.raises(PlanError) as refused:
        plan_on(P100, RTX_5090)
    message = str(refused.value)
    assert message.startswith(
        "no stack profile runs every GPU of this pod (Tesla P100-PCIE-16GB (sm_60), NVIDIA"
        " GeForce RTX 5090 (sm_120); torch25-cu124: sm_50"
    )
    assert "torch28-cu128: sm_70 sm_75 sm_80 sm_86 sm_90 sm_100 sm_120" in message


def test_openmmlab_on_blackwell_is_refused_naming_the_stack_that_would_run():
    with pytest.raises(PlanError) as refused:
        plan_on(RTX_5090, enable_openmmlab=True)
    assert str(refused.value) == (
        "OpenMMLab's mmcv 2.1.0 builds against torch 2.5.1 only, but torch25-cu124 cannot run"
        " on NVIDIA GeForce RTX 5090 (sm_120) (torch 2.5.1 carries sm_50 sm_60 sm_70 sm_75"
        " sm_80 sm_86 sm_90); torch28-cu128 would run: turn the feature off on this GPU"
    )


def test_a_device_without_a_capability_is_named_in_a_warning():
    plan = plan_on(("NVIDIA Mystery", None))
    assert plan.stack == "torch25-cu124"
    assert any(w.startswith("NVIDIA Mystery: nvidia-smi reports no compute") for w in plan.warnings)


def test_requirements_follow_models_and_stack():
    plan = plan_for(24564, enable_dwpose=True)
    stack = STACK_PROFILES[plan.stack].approx_bytes
    assert plan.requirements.disk_bytes == plan.total_bytes + stack
    assert plan.requirements.stack_bytes == stack
    assert plan.requirements.python == (3, 10)


def test_catalog_sizes_can_be_left_to_the_hub():
    exact = plan_for(24564, enable_dwpose=True)
    hub_sized = plan_for(24564, enable_dwpose=True, verify_catalog_sizes=False)
    assert 134_399_116 in [m.bytes for m in exact.models]
    assert [m.bytes for m in hub_sized.models] == [None, None]
    # Nor the disk: the hub's sizes are not the catalog's (the fetcher checks them).
    assert exact.total_bytes > 0 and hub_sized.total_bytes == 0
    assert hub_sized.requirements.disk_bytes == STACK_PROFILES[hub_sized.stack].approx_bytes


# flash-attn: the release wheel by Python tag, torch build and C++ ABI (docs/facts.md#python-stack).
@pytest.mark.parametrize(
    ("profile", "python", "machine", "wheel"),
    [
        (
            "torch25-cu124",
            (3, 11, 2),
            "x86_64",
            "v2.7.4.post1/flash_attn-2.7.4.post1+cu12torch2.5cxx11abiFALSE-cp311-cp311-"
            "linux_x86_64.whl",
        ),
        (
            "torch25-cu124",
            (3, 10, 12),
            "x86_64",
            "v2.7.4.post1/flash_attn-2.7.4.post1+cu12torch2.5cxx11abiFALSE-cp310-cp310-"
            "linux_x86_64.whl",
        ),
        (
            "torch28-cu128",
            (3, 11, 2),
            "x86_64",
            "v2.8.3/flash_attn-2.8.3+cu12torch2.8cxx11abiTRUE-cp311-cp311-linux_x86_64.whl",
        ),
        ("torch25-cu124", (3, 9, 2), "x86_64", None),
        ("torch25-cu124", (3, 11, 2), "aarch64", None),
    ],
)
def test_flash_attn_wheel_follows_python_torch_and_abi(profile, python, machine, wheel):
    settings = Settings(stack_profile=profile)
    plan = build_plan(settings, GpuReport(), python, machine)
    released = [w for w in plan.python_stack.built if w.name == "flash-attn"]
    if wheel is None:
        assert released == []
        (warning,) = [w for w in plan.warnings if w.startswith("flash-attn")]
        assert warning.endswith("xformers only")
    else:
        prefix = "https://github.com/Dao-AILab/flash-attention/releases/download/"
        (flash_attn,) = released
        assert flash_attn.source == prefix + wheel and flash_attn.prebuilt
        assert flash_attn.version == wheel.split("-")[1].split("+")[0]
        assert flash_attn.against == ["torch"] and flash_attn.environment == {}


@pytest.mark.parametrize(
    ("python", "pins", "pinned"),
    [
        # podforge pins this release asset itself (FLASH_ATTN_SHA256)
        ((3, 11, 2), {}, FLASH_ATTN_SHA256[CP311_WHEEL]),
        # the settings' pin wins: a mirror's own build of the same file name
        ((3, 11, 2), {CP311_WHEEL: "e" * 64}, "e" * 64),
        # none known: the first fetch's hash is recorded, and the plan says so
        ((3, 12, 1), {}, None),
    ],
)
def test_flash_attns_wheel_is_pinned_by_its_file_name(python, pins, pinned):
    plan = build_plan(Settings(flash_attn_sha256=pins), GpuReport(), python, "x86_64")
    (flash_attn,) = [w for w in plan.python_stack.built if w.name == "flash-attn"]
    assert flash_attn.source_sha256 == pinned
    unpinned = [w for w in plan.warnings if w.startswith("flash-attn: no sha256 is pinned")]
    assert len(unpinned) == (pinned is None)
    assert not plan.python_stack.needs_nvcc  # a release asset compiles nothing


@pytest.mark.parametrize(
    ("pins", "field"),
    [
        ({"../../etc/passwd.whl": "e" * 64}, "flash_attn_sha256"),
        ({CP311_WHEEL: "E" * 64}, "flash_attn_sha256"),
        ({CP311_WHEEL: "e" * 63}, "flash_attn_sha256"),
    ],
)
def test_a_bad_release_pin_is_refused_naming_the_setting(pins, field):
    with pytest.raises(ValidationError, match=field):
        Settings(flash_attn_sha256=pins)


def test_flash_attn_mirror_replaces_github():
    settings = Settings(flash_attn_mirror="file:///workspace/mirror/")
    plan = build_plan(settings, GpuReport(), (3, 11, 2), "x86_64")
    (flash_attn,) = plan.python_stack.built
    assert flash_attn.source.startswith("file:///workspace/mirror/v2.7.4.post1/")


def test_no_flash_attn_before_the_pods_python_is_known():
    plan = build_plan(Settings(phase="image"), GpuReport(), None, None)
    assert plan.python_stack.built == [] and plan.warnings == []
