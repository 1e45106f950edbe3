"""settings + facts -> Plan. Pure: no I/O, tested on tables (tests/unit/test_plan.py).

The one threshold table lives here (``VRAM_POLICY``), keyed on each device's usable VRAM.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from podforge.core.auth import private_port
from podforge.core.catalog import files_for, nearest_quant, published_quants, published_variants
from podforge.core.comfyui_args import has_vram_mode
from podforge.core.config import Settings
from podforge.core.errors import PodforgeError
from podforge.core.gpu import GpuDevice, GpuReport, arch_runs, sm
from podforge.core.sources import ModelSource
from podforge.core.stacks import (
    BUILD_PACKAGES,
    DEFAULT_STACK,
    FLASH_ATTN_RELEASES,
    FLASH_ATTN_SHA256,
    OPENMMLAB,
    OPENMMLAB_STACK,
    PROXY_PACKAGES,
    STACK_PROFILES,
    SYSTEM_PACKAGES,
    TURBODIFFUSION_MIN_TORCH,
    StackProfile,
)


class PlanError(PodforgeError, ValueError):
    """The settings ask for something this pod cannot have; the message says why."""


@dataclass(frozen=True)
class VramPolicy:
    min_mib: int
    tier: str
    memory_mode: str
    comfyui_args: tuple[str, ...]


# Usable VRAM (MiB) -> tier, memory mode, ComfyUI VRAM args. First row whose min fits wins.
VRAM_POLICY: tuple[VramPolicy, ...] = (
    VramPolicy(48000, "datacenter", "full", ("--highvram",)),
    VramPolicy(24000, "prosumer", "model_cpu_offload", ()),
    VramPolicy(20000, "prosumer", "sequential_cpu_offload", ("--normalvram",)),
    VramPolicy(12000, "consumer", "sequential_cpu_offload", ("--normalvram",)),
    VramPolicy(8000, "consumer", "sequential_cpu_offload", ("--lowvram",)),
    VramPolicy(0, "consumer", "sequential_cpu_offload", ("--lowvram", "--cpu-vae")),
)

# SteadyDancer precision for "auto": (min MiB, precision, GGUF quant).
STEADYDANCER_PRECISION: tuple[tuple[int, str, str | None], ...] = (
    (40000, "fp16", None),
    (20000, "fp8", None),
    (15000, "gguf", "q4_k_m"),
    (11000, "gguf", "q3_k_m"),
    (6000, "gguf", "q2_k"),
)
STEADYDANCER_MIN_MIB = 6000

# WAN 2.2 I2V experts for "auto": fp8 from 20000 MiB, else the published GGUF.
WAN22_FP8_MIN_MIB = 20000

# A variant chosen at boot, on the GPU the pod really has.
DEFERRED = "deferred"


MIN_PYTHON = (3, 10)
# RAM the pod needs beside the GPU: offloading keeps model weights in host memory.
MIN_MEMORY_MIB: dict[str, int] = {
    "full": 8_000,
    "model_cpu_offload": 16_000,
    "sequential_cpu_offload": 16_000,
    "none": 2_000,
}


class ComfyInstance(BaseModel):
    model_config = ConfigDict(frozen=True)

    device: int
    listen: str  # the address people reach it on (comfyui_listen)
    port: int  # and its port (nginx's, with comfyui_auth)
    private_port: int | None  # ComfyUI's own behind the login; None: no login in front
    cuda_visible_devices: str | None
    tier: str
    memory_mode: str
    args: list[str]


class PlannedModel(ModelSource):
    """One file of the fetch manifest: its source (sources.py), where it goes on the pod."""

    dest: str  # absolute path on the pod
    feature: str = "custom"
    planned_bytes: int = 0  # exact or estimated, for disk planning; 0: the hub's to say


class Requirements(BaseModel):
    model_config = ConfigDict(frozen=True)

    disk_bytes: int  # free space needed under the models dir if nothing is there yet
    stack_bytes: int  # the venv's share of it (not needed again once the venv holds the lock)
    memory_mib: int
    python: tuple[int, int]


class BuiltWheel(BaseModel):
    """A wheel the pod's wheelhouse finds, fetches from the bucket or makes (`podforge
    wheelhouse ensure`), installed beside the lock: flash-attn's release asset (``source`` a
    wheel, fetched as it is), or a feature's ``SourceWheel`` built with the build variables
    of this pod's kernels."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: str
    source: str
    source_sha256: str | None  # None: a release asset no one pinned (its first fetch's hash)
    against: list[str]
    environment: dict[str, str]

    @property
    def prebuilt(self) -> bool:
        return self.source.endswith(".whl")


class PythonStack(BaseModel):
    """The venv's pinned core: which profile, which flash-attn wheel, what is built here."""

    model_config = ConfigDict(frozen=True)

    profile: str
    feature: str | None  # a StackFeature whose lock replaces the profile's (openmmlab)
    # Beside the lock, through the wheelhouse: flash-attn's release wheel (none: xformers
    # only, the plan's warnings say why), then the feature's source builds (mmcv).
    built: list[BuiltWheel]
    imports: list[str]  # what verify imports in the venv for the feature
    needs_nvcc: bool  # a source build (mmcv) compiles CUDA code on the pod
    cuda: str


class Plan(BaseModel):
    model_config = ConfigDict(frozen=True)

    phase: str
    gpus: list[GpuDevice]
    tier: str
    memory_mode: str
    comfyui: list[ComfyInstance]
    variants: dict[str, Any]
    stack: str
    stack_reason: str  # why this profile, for people
    python_stack: PythonStack
    system_packages: list[str]  # Debian/Ubuntu packages the pod needs
    models: list[PlannedModel]
    total_bytes: int
    requirements: Requirements
    warnings: list[str]

    def summary(self) -> str:
        """One line: the devices, the tier and the stack with why it was chosen."""
        if self.gpus:
            shown = ", ".join(
                f"{d.name} ({d.vram_mib} MiB{f', {sm(d.compute_cap)}' if d.compute_cap else ''})"
                for d in self.gpus
            )
        else:
            shown = "no GPU"
        return f"{shown}: tier {self.tier}; stack {self.stack} ({self.stack_reason})"


def policy_for(vram_mib: int) -> VramPolicy:
    return next(row for row in VRAM_POLICY if vram_mib >= row.min_mib)


def build_plan(
    settings: Settings,
    gpus: GpuReport,
    python: tuple[int, ...] | None = None,
    machine: str | None = None,
) -> Plan:
    """The whole desired state of one pod, or PlanError saying why it cannot be had.

    ``python`` and ``machine`` are the pod's (PodHost fact); they choose the flash-attn wheel.
    """
    warnings = list(gpus.warnings)
    devices = list(gpus.devices)
    smallest = min(devices, key=lambda d: d.vram_mib) if devices else None

    instances = [_instance(settings, device) for device in devices]
    if not devices and settings.phase != "image":
        # A build reads no GPU and starts nothing; a pod without one still serves, slowly.
        instances = [_cpu_instance(settings)]
        warnings.append(
            "no GPU found: one ComfyUI runs on the CPU (--cpu), which is slow for video models"
        )
    if smallest is None:
        tier = "none" if settings.gpu_tier == "auto" else settings.gpu_tier
        memory_mode = "none" if settings.gpu_memory_mode == "auto" else settings.gpu_memory_mode
    else:
        tier, memory_mode = _tier_and_mode(settings, smallest)

    variants: dict[str, Any] = {}
    if settings.enable_steadydancer:
        variants["steadydancer"] = _steadydancer_variant(settings, smallest, warnings)
        if variants["steadydancer"] != DEFERRED:
            variants["steadydancer"]["memory_mode"] = (
                memory_mode
                if settings.steadydancer_gpu_memory_mode == "auto"
                else settings.steadydancer_gpu_memory_mode
            )
    if settings.enable_wan22:
        variants["wan22"] = _wan22_variant(smallest)
    if settings.enable_qwen_edit:
        variants["qwen_edit"] = _qwen_variant(settings, warnings)

    stack, stack_reason = _stack(settings, devices, warnings)
    models = [] if settings.phase == "image" else _models(settings, variants)
    warnings += [
        f"custom_models: {m.label} has no sha256: checked by size only, then stamped with "
        "the sha256 its download computed (unverified; add sha256 to verify it)"
        for m in models
        if m.kind == "url" and m.sha256 is None
    ]
    if not settings.comfyui_auth and settings.phase != "image":
        warnings.append(
            f"comfyui_auth is off: ComfyUI on {settings.comfyui_listen} ports "
            f"{', '.join(str(i.port) for i in instances)} answers anyone who reaches them "
            "(queue work, upload files, run node code): turn COMFYUI_AUTH back on"
        )
    total = sum(m.planned_bytes for m in models)
    stack_bytes = STACK_PROFILES[stack].approx_bytes
    return Plan(
        phase=settings.phase,
        gpus=devices,
        tier=tier,
        memory_mode=memory_mode,
        comfyui=instances,
        variants=variants,
        stack=stack,
        stack_reason=stack_reason,
        python_stack=_python_stack(
            settings, STACK_PROFILES[stack], python, machine, devices, warnings
        ),
        system_packages=[
            *SYSTEM_PACKAGES,
            *(PROXY_PACKAGES if settings.comfyui_auth else ()),
            *(BUILD_PACKAGES if settings.enable_openmmlab else ()),
        ],
        models=models,
        total_bytes=total,
        requirements=Requirements(
            disk_bytes=total + stack_bytes,
            stack_bytes=stack_bytes,
            memory_mib=MIN_MEMORY_MIB[memory_mode] if devices else MIN_MEMORY_MIB["none"],
            python=MIN_PYTHON,
        ),
        warnings=warnings,
    )


def _tier_and_mode(settings: Settings, device: GpuDevice) -> tuple[str, str]:
    row = policy_for(device.vram_mib)
    tier = row.tier if settings.gpu_tier == "auto" else settings.gpu_tier
    mode = row.memory_mode if settings.gpu_memory_mode == "auto" else settings.gpu_memory_mode
    return tier, mode


def _instance(settings: Settings, device: GpuDevice) -> ComfyInstance:
    tier, mode = _tier_and_mode(settings, device)
    port = settings.comfyui_port + device.index
    user_args = list(settings.comfyui_args)
    # A VRAM mode in COMFYUI_ARGS replaces the table's VRAM args (they are exclusive).
    vram_args = [] if has_vram_mode(user_args) else list(policy_for(device.vram_mib).comfyui_args)
    return ComfyInstance(
        device=device.index,
        listen=settings.comfyui_listen,
        port=port,
        private_port=private_port(port) if settings.comfyui_auth else None,
        cuda_visible_devices=device.uuid or str(device.gpu_index),
        tier=tier,
        memory_mode=mode,
        args=[*vram_args, *user_args, *_listen(settings, port)],
    )


def _listen(settings: Settings, port: int) -> list[str]:
    """Where ComfyUI listens: behind the login, where only nginx reaches it."""
    if settings.comfyui_auth:
        return ["--listen", settings.comfyui_private_listen, "--port", str(private_port(port))]
    return ["--listen", settings.comfyui_listen, "--port", str(port)]


def _cpu_instance(settings: Settings) -> ComfyInstance:
    user_args = list(settings.comfyui_args)
    # --cpu is a VRAM mode: a user's own (--cpu or another) stands instead.
    mode = [] if has_vram_mode(user_args) else ["--cpu"]
    port = settings.comfyui_port
    return ComfyInstance(
        device=0,
        listen=settings.comfyui_listen,
        port=port,
        private_port=private_port(port) if settings.comfyui_auth else None,
        cuda_visible_devices=None,
        tier="none",
        memory_mode="none",
        args=[*mode, *user_args, *_listen(settings, port)],
    )


def _steadydancer_variant(
    settings: Settings, smallest: GpuDevice | None, warnings: list[str]
) -> dict[str, Any] | str:
    if smallest is not None and smallest.vram_mib < STEADYDANCER_MIN_MIB:
        raise PlanError(
            f"SteadyDancer needs at least {STEADYDANCER_MIN_MIB} MiB of VRAM per device; "
            f"{smallest.name} has {smallest.vram_mib} MiB. Use a larger GPU or MIG slice, "
            "or set ENABLE_STEADYDANCER=false."
        )
    precision: str = settings.steadydancer_variant
    quant: str | None = None
    if precision == "auto":
        if smallest is None:
            return DEFERRED
        _, precision, quant = next(
            row for row in STEADYDANCER_PRECISION if smallest.vram_mib >= row[0]
        )
    if precision == "gguf":
        if settings.steadydancer_gguf_model != "auto":
            quant = settings.steadydancer_gguf_model
        elif smallest is None:
            return {"precision": "gguf", "quant": DEFERRED}
        else:
            quant = _auto_quant(smallest.vram_mib)
        published = published_quants("steadydancer")
        if quant not in published:
            nearest = nearest_quant(quant, published)
            warnings.append(
                f"SteadyDancer GGUF quant {quant} is not published in the catalog "
                f"(published: {', '.join(published)}); using the nearest, {nearest}."
            )
            quant = nearest
    return {"precision": precision, "quant": quant}


def _auto_quant(vram_mib: int) -> str:
    """The table's GGUF quant for this VRAM; above the GGUF rows, the largest of them."""
    gguf_rows = [(floor, quant) for floor, _, quant in STEADYDANCER_PRECISION if quant]
    return next((quant for floor, quant in gguf_rows if vram_mib >= floor), gguf_rows[-1][1])


def _wan22_variant(smallest: GpuDevice | None) -> dict[str, Any] | str:
    if smallest is None:
        return DEFERRED
    if smallest.vram_mib >= WAN22_FP8_MIN_MIB:
        return {"precision": "fp8", "quant": None}
    return {"precision": "gguf", "quant": published_quants("wan22")[0]}


def _qwen_variant(settings: Settings, warnings: list[str]) -> dict[str, Any]:
    published = published_variants("qwen_edit")
    if settings.qwen_edit_model in published:
        return {"precision": settings.qwen_edit_model, "quant": None}
    warnings.append(
        f"QWEN_EDIT_MODEL={settings.qwen_edit_model} is not published in the catalog "
        f"(published: {', '.join(published)}); using {published[0]}."
    )
    return {"precision": published[0], "quant": None}


def _stack(settings: Settings, devices: list[GpuDevice], warnings: list[str]) -> tuple[str, str]:
    """The stack profile and why: the first whose torch has kernels for every device and
    carries what the features need, or the one STACK_PROFILE names if it can run here."""
    if settings.enable_turbodiffusion and settings.enable_openmmlab:
        raise PlanError(
            "TurboDiffusion needs torch >= 2.7 but OpenMMLab (mmcv 2.1.0) only builds against "
            "the torch 2.5.1 stack; enable one of ENABLE_TURBODIFFUSION / ENABLE_OPENMMLAB."
        )
    unknown = [d.name for d in devices if not d.compute_cap]
    if unknown:
        warnings.append(
            f"{', '.join(unknown)}: nvidia-smi reports no compute capability, so the stack "
            "cannot be matched to it (verify runs a kernel on it to prove it computes)"
        )
    default = STACK_PROFILES[DEFAULT_STACK]
    # The default first, then the rest in the table's order (older torch first).
    profiles = [default, *(p for p in STACK_PROFILES.values() if p is not default)]
    runnable = [p for p in profiles if not _cannot_run(p, devices)]
    if settings.enable_turbodiffusion:
        need = "TurboDiffusion needs torch >= 2.7"
        allowed = [p for p in profiles if p.torch_major_minor >= TURBODIFFUSION_MIN_TORCH]
    elif settings.enable_openmmlab:
        need = "OpenMMLab's mmcv 2.1.0 builds against torch 2.5.1 only"
        allowed = [STACK_PROFILES[OPENMMLAB_STACK]]
    else:
        need, allowed = "", profiles
    wanted = settings.stack_profile
    if wanted != "auto":
        profile = STACK_PROFILES[wanted]
        if profile not in allowed:
            fits = [p.name for p in allowed if p in runnable]
            instead = f"set STACK_PROFILE=auto or {fits[0]}" if fits else "no profile has both"
            raise PlanError(
                f"STACK_PROFILE={wanted} has torch {profile.torch} but {need}; {instead}"
            )
        if blocked := _cannot_run(profile, devices):
            fits = [p.name for p in allowed if p in runnable]
            raise PlanError(
                f"STACK_PROFILE={wanted} cannot run on {_devices(blocked)}: torch "
                f"{profile.torch} carries {' '.join(profile.architectures)}; "
                + (
                    f"{fits[0]} would run (set STACK_PROFILE=auto or {fits[0]})"
                    if fits
                    else "no profile runs it"
                )
            )
        return wanted, "STACK_PROFILE"
    chosen = next((p for p in allowed if p in runnable), None)
    if chosen is None:
        if not runnable:
            carried = "; ".join(f"{p.name}: {' '.join(p.architectures)}" for p in profiles)
            raise PlanError(
                f"no stack profile runs every GPU of this pod ({_devices(devices)}; {carried}):"
                " rent a pod whose GPUs are of one generation"
            )
        blocked = _cannot_run(allowed[0], devices)
        raise PlanError(
            f"{need}, but {allowed[0].name} cannot run on {_devices(blocked)} (torch "
            f"{allowed[0].torch} carries {' '.join(allowed[0].architectures)}); "
            f"{runnable[0].name} would run: turn the feature off on this GPU"
        )
    if chosen is default:
        return chosen.name, need or "the default"
    if need and not _cannot_run(default, devices):
        return chosen.name, need
    return (
        chosen.name,
        f"{default.name} has no kernels for {_devices(_cannot_run(default, devices))}",
    )


def _cannot_run(profile: StackProfile, devices: list[GpuDevice]) -> list[GpuDevice]:
    """The devices ``profile``'s torch has no kernels for (unknown capabilities pass)."""
    return [
        d for d in devices if d.compute_cap and not arch_runs(profile.architectures, d.compute_cap)
    ]


def _devices(devices: list[GpuDevice]) -> str:
    """``NVIDIA GeForce RTX 5090 (sm_120)``, each distinct device once."""
    shown = dict.fromkeys(f"{d.name} ({sm(d.compute_cap or '0.0')})" for d in devices)
    return ", ".join(shown)


def _python_stack(
    settings: Settings,
    profile: StackProfile,
    python: tuple[int, ...] | None,
    machine: str | None,
    devices: list[GpuDevice],
    warnings: list[str],
) -> PythonStack:
    released: list[BuiltWheel] = []
    # Unknown only outside a deploy (a plan for a table test): nothing to choose from yet.
    if python is not None and machine is not None:
        url, why_not = flash_attn_wheel(profile, python, machine, settings.flash_attn_mirror)
        if url is None:
            warnings.append(f"flash-attn: {why_not}; xformers only")
        else:
            released.append(_flash_attn_asset(url, settings, warnings))
    feature = OPENMMLAB if settings.enable_openmmlab else None
    kernels = _kernels(profile, settings, devices)
    sources = [
        BuiltWheel(
            name=wheel.name,
            version=wheel.version,
            source=wheel.source,
            source_sha256=wheel.source_sha256,
            against=list(wheel.against),
            environment={**dict(wheel.environment), **kernels},
        )
        for wheel in (feature.built if feature else ())
    ]
    if sources and not kernels:
        warnings.append("OpenMMLab: no GPU serves here, so mmcv's ops are built for the CPU only")
    return PythonStack(
        profile=profile.name,
        feature=feature.name if feature else None,
        built=released + sources,
        imports=list(feature.imports) if feature else [],
        needs_nvcc=bool(sources and kernels),
        cuda=profile.cuda,
    )


def _flash_attn_asset(url: str, settings: Settings, warnings: list[str]) -> BuiltWheel:
    """flash-attn's release wheel for the wheelhouse, pinned by its file name's sha256 (the
    settings' over podforge's), or, with a warning, by its first fetch's."""
    file_name = url.rsplit("/", 1)[1]
    sha256 = {**FLASH_ATTN_SHA256, **settings.flash_attn_sha256}.get(file_name)
    if sha256 is None:
        warnings.append(
            f"flash-attn: no sha256 is pinned for {file_name}: the first fetch's is recorded"
            " in the wheelhouse and every later install is checked against it (pin it:"
            " flash_attn_sha256)"
        )
    return BuiltWheel(
        name="flash-attn",
        version=file_name.split("-")[1].split("+")[0],
        source=url,
        source_sha256=sha256,
        against=["torch"],
        environment={},
    )


def _kernels(profile: StackProfile, settings: Settings, devices: list[GpuDevice]) -> dict[str, str]:
    """The build variables of CUDA kernels for every architecture the profile's torch carries
    (one wheel serves the whole fleet), or none where no GPU will serve: a pod without one,
    ComfyUI told --cpu. An image is built without a GPU for pods that have one."""
    if "--cpu" in settings.comfyui_args or (not devices and settings.phase != "image"):
        return {}
    arch_list = ";".join(f"{a[3:-1]}.{a[-1]}" for a in profile.architectures)
    return {
        "FORCE_CUDA": "1",
        "TORCH_CUDA_ARCH_LIST": arch_list,
        "CUDA_HOME": f"/usr/local/cuda-{profile.cuda}",
    }


def flash_attn_wheel(
    profile: StackProfile, python: tuple[int, ...], machine: str, mirror: str
) -> tuple[str | None, str | None]:
    """The release wheel for this torch build, Python and machine, or None and the reason."""
    release = next((r for r in FLASH_ATTN_RELEASES if r.version == profile.flash_attn), None)
    if release is None:
        return None, f"no flash-attn release is listed for {profile.name}"
    tag = f"cp{python[0]}{python[1]}"
    if not release.torch_min <= profile.torch_major_minor <= release.torch_max:
        return None, f"flash-attn {release.version} has no wheel for torch {profile.torch}"
    if tag not in release.python_tags or machine not in release.machines:
        return None, (
            f"flash-attn {release.version} has no wheel for {tag} on {machine} "
            f"(it has {', '.join(release.python_tags)} on {', '.join(release.machines)})"
        )
    torch_mm = ".".join(str(part) for part in profile.torch_major_minor)
    abi = "TRUE" if profile.cxx11_abi else "FALSE"
    cuda_major = profile.cuda.split(".")[0]
    name = (
        f"flash_attn-{release.version}+cu{cuda_major}torch{torch_mm}cxx11abi{abi}"
        f"-{tag}-{tag}-linux_{machine}.whl"
    )
    return f"{mirror.rstrip('/')}/v{release.version}/{name}", None


def _variant_key(variant: dict[str, Any] | None) -> str | None:
    """Catalog key of a chosen variant; None when the choice is deferred to boot."""
    if not isinstance(variant, dict) or variant["quant"] == DEFERRED:
        return None
    if variant["precision"] == "gguf":
        return f"gguf:{variant['quant']}"
    return str(variant["precision"])


FEATURES: tuple[tuple[str, str], ...] = (
    ("steadydancer", "enable_steadydancer"),
    ("wan22", "enable_wan22"),
    ("turbodiffusion", "enable_turbodiffusion"),
    ("qwen_edit", "enable_qwen_edit"),
    ("dwpose", "enable_dwpose"),
)


def _models(settings: Settings, variants: dict[str, Any]) -> list[PlannedModel]:
    """The manifest: every file the enabled features need, each destination once."""
    chosen: dict[str, PlannedModel] = {}
    # Without the catalog's sizes (a hub serving other files) the sizes are the hub's to say:
    # the fetcher checks the disk against them before it writes; the catalog's would plan a
    # disk for files this hub does not serve.
    sized = settings.verify_catalog_sizes
    for feature, flag in FEATURES:
        if not getattr(settings, flag):
            continue
        for entry in files_for(feature, _variant_key(variants.get(feature))):
            dest = posixpath.join(settings.models_dir, entry.dest)
            chosen.setdefault(
                dest,
                PlannedModel(
                    **_source(entry),
                    feature=feature,
                    dest=dest,
                    planned_bytes=entry.planned_bytes if sized else 0,
                ).model_copy(update={"bytes": entry.bytes if sized else None}),
            )
    for custom in settings.custom_models:
        dest = posixpath.join(settings.models_dir, custom.dest)
        chosen[dest] = PlannedModel(**_source(custom), dest=dest, planned_bytes=custom.bytes or 0)
    return list(chosen.values())


def _source(entry: ModelSource) -> dict[str, Any]:
    """The source fields of a catalog or custom entry (what PlannedModel takes from it)."""
    return {name: getattr(entry, name) for name in ModelSource.model_fields}
