"""What the pod's GPUs are, from nvidia-smi's own output (pure parsing, no I/O).

One shell command (``PROBE_COMMAND``) asks nvidia-smi two things: the CSV query for every
GPU and ``nvidia-smi -L`` for MIG slices. The pyinfra fact (facts/gpu.py) and the pod-side
``python -m podforge plan`` both run that command and hand its stdout to ``parse_probe``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict

from podforge.core.errors import PodforgeError

QUERY_FIELDS = (
    "index",
    "name",
    "memory.total",
    "driver_version",
    "compute_cap",
    "mig.mode.current",
)

MARK = "@@podforge-gpu"

PROBE_COMMAND = " ".join(
    [
        "if command -v nvidia-smi >/dev/null; then",
        f"echo '{MARK} query';",
        f"nvidia-smi --query-gpu={','.join(QUERY_FIELDS)} --format=csv,noheader,nounits 2>&1;",
        f'echo "{MARK} exit $?";',
        f"echo '{MARK} list';",
        "nvidia-smi -L 2>&1;",
        f'echo "{MARK} exit $?";',
        f"else echo '{MARK} absent'; fi",
    ]
)

# nvidia-smi's exit code when the kernel driver is not loaded / not reachable.
EXIT_NO_DRIVER = 9

_NOT_AVAILABLE = {"[N/A]", "[Not Supported]", "N/A", ""}
_GPU_LINE = re.compile(r"^GPU (?P<index>\d+): (?P<name>.+?) \(UUID: (?P<uuid>[^)]+)\)$")
_MIG_LINE = re.compile(
    r"^\s+MIG (?P<profile>\S+)\s+Device\s+(?P<device>\d+): \(UUID: (?P<uuid>[^)]+)\)$"
)
_PROFILE_MEMORY = re.compile(r"\.(?P<gb>\d+)gb$")


class GpuDevice(BaseModel):
    """One device a ComfyUI instance can run on: a whole GPU or one MIG slice."""

    model_config = ConfigDict(frozen=True)

    index: int  # position among usable devices (ComfyUI instance number)
    gpu_index: int  # the physical GPU it is on
    name: str
    vram_mib: int  # usable VRAM: the slice's memory for a MIG slice
    mig: str | None  # MIG profile such as "1g.10gb", or None for a whole GPU
    uuid: str | None  # what CUDA_VISIBLE_DEVICES should name (MIG slices need it)
    driver_version: str | None
    compute_cap: str | None


_ARCH = re.compile(r"^(?P<kind>sm|compute)_(?P<major>\d+)(?P<minor>\d)(?P<suffix>[af]?)$")


def sm(compute_cap: str) -> str:
    """nvidia-smi's ``compute_cap`` (``12.0``) as the architecture torch names (``sm_120``)."""
    major, minor = _capability(compute_cap)
    return f"sm_{major}{minor}"


def _capability(compute_cap: str) -> tuple[int, int]:
    major, _, minor = compute_cap.strip().partition(".")
    if not (major.isdigit() and minor.isdigit() and len(minor) == 1):
        raise GpuProbeError(f"nvidia-smi compute_cap is not MAJOR.MINOR: {compute_cap!r}")
    return int(major), int(minor)


def arch_runs(architectures: Iterable[str], compute_cap: str) -> bool:
    """Whether a torch build carrying ``architectures`` (its ``torch.cuda.get_arch_list()``)
    has kernels a device of ``compute_cap`` runs. A cubin for sm_XY runs on sm_XZ with Z >= Y,
    never across majors; an arch-specific one (sm_90a) only on its own arch; PTX
    (compute_XY) is compiled by the driver for any device from XY on."""
    device = _capability(compute_cap)
    for arch in architectures:
        match = _ARCH.match(arch)
        if match is None:
            continue  # not an architecture (torch lists nothing else today)
        built = int(match["major"]), int(match["minor"])
        if match["kind"] == "compute":
            if device >= built:
                return True
        elif match["suffix"] == "a":
            if device == built:
                return True
        elif device[0] == built[0] and device[1] >= built[1]:
            return True
    return False


class GpuReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    devices: tuple[GpuDevice, ...] = ()
    warnings: tuple[str, ...] = ()


class GpuProbeError(PodforgeError, RuntimeError):
    """nvidia-smi answered in a way podforge does not understand."""


def parse_probe(lines: list[str]) -> GpuReport:
    """Parse PROBE_COMMAND's stdout into usable devices."""
    sections = _sections(lines)
    if "absent" in sections:
        return GpuReport()
    query_lines, query_exit = sections.get("query", ([], None))
    list_lines, list_exit = sections.get("list", ([], None))
    if query_exit is None or list_exit is None:
        raise GpuProbeError(f"incomplete nvidia-smi probe output: {lines!r}")
    if EXIT_NO_DRIVER in (query_exit, list_exit):
        message = " ".join(query_lines or list_lines).strip()
        return GpuReport(
            warnings=(
                "nvidia-smi is installed but cannot talk to the NVIDIA driver (exit 9): "
                f"{message} No GPU will be used; check the driver or the container's GPU access.",
            )
        )
    for exit_code, output in ((query_exit, query_lines), (list_exit, list_lines)):
        if exit_code != 0:
            raise GpuProbeError(f"nvidia-smi failed with exit {exit_code}: {' '.join(output)}")
    return _devices(parse_query(query_lines), parse_list(list_lines))


def _sections(lines: list[str]) -> dict[str, tuple[list[str], int | None]]:
    sections: dict[str, tuple[list[str], int | None]] = {}
    current: str | None = None
    body: list[str] = []
    for line in lines:
        if line.startswith(MARK):
            word, _, rest = line[len(MARK) :].strip().partition(" ")
            if word == "exit" and current is not None:
                sections[current] = (body, int(rest))
                current, body = None, []
            else:
                current, body = word, []
                sections[word] = ([], None)
        elif current is not None:
            body.append(line)
    return sections


def _field(value: str) -> str | None:
    value = value.strip()
    return None if value in _NOT_AVAILABLE else value


def parse_query(lines: list[str]) -> list[dict[str, str | None]]:
    """Rows of ``--query-gpu=QUERY_FIELDS --format=csv,noheader,nounits``."""
    rows = []
    for line in lines:
        if not line.strip():
            continue
        # GPU names contain no commas; split from the left keeps them whole anyway.
        parts = [part.strip() for part in line.split(", ")]
        if len(parts) != len(QUERY_FIELDS):
            raise GpuProbeError(
                f"nvidia-smi --query-gpu row has {len(parts)} fields, "
                f"expected {len(QUERY_FIELDS)}: {line!r}"
            )
        rows.append({key: _field(value) for key, value in zip(QUERY_FIELDS, parts, strict=True)})
    return rows


def parse_list(lines: list[str]) -> dict[int, dict[str, object]]:
    """``nvidia-smi -L``: GPU index -> {uuid, name, migs: [(profile, uuid), ...]}."""
    gpus: dict[int, dict[str, object]] = {}
    current: dict[str, object] | None = None
    for line in lines:
        if match := _GPU_LINE.match(line):
            current = {"uuid": match["uuid"], "name": match["name"], "migs": []}
            gpus[int(match["index"])] = current
        elif (match := _MIG_LINE.match(line)) and current is not None:
            migs = current["migs"]
            assert isinstance(migs, list)
            migs.append((match["profile"], match["uuid"]))
    return gpus


def mig_memory_mib(profile: str) -> int:
    """A lower bound of a MIG slice's memory from its profile name (``3g.40gb`` -> 38146).

    The name's GB are decimal; real slices hold slightly more (a 1g.10gb slice is
    9.5-9.75 GiB), so reading it as 10**9 bytes errs on the safe side.
    """
    match = _PROFILE_MEMORY.search(profile)
    if not match:
        raise GpuProbeError(f"unrecognised MIG profile {profile!r} in nvidia-smi -L")
    return int(match["gb"]) * 10**9 // 2**20


def _mib(value: str) -> int:
    """``16376`` (nounits) or ``16376 MiB`` -> 16376."""
    number = value.removesuffix("MiB").strip()
    try:
        return int(float(number))
    except ValueError:
        raise GpuProbeError(f"nvidia-smi memory.total is not a number of MiB: {value!r}") from None


def _devices(rows: list[dict[str, str | None]], listed: dict[int, dict[str, object]]) -> GpuReport:
    devices: list[GpuDevice] = []
    warnings: list[str] = []
    for row in rows:
        gpu_index = int(row["index"] or 0)
        info = listed.get(gpu_index, {})
        migs = info.get("migs") or []
        assert isinstance(migs, list)
        common = {
            "gpu_index": gpu_index,
            "driver_version": row["driver_version"],
            "compute_cap": row["compute_cap"],
        }
        name = row["name"] or str(info.get("name") or "unknown GPU")
        if row["mig.mode.current"] == "Enabled":
            if not migs:
                warnings.append(
                    f"GPU {gpu_index} ({name}) has MIG enabled but no MIG slice is visible; "
                    "it is not used."
                )
            for profile, uuid in migs:
                devices.append(
                    GpuDevice(
                        index=len(devices),
                        name=f"{name} MIG {profile}",
                        vram_mib=mig_memory_mib(profile),
                        mig=profile,
                        uuid=uuid,
                        **common,
                    )
                )
            continue
        if row["memory.total"] is None:
            warnings.append(f"GPU {gpu_index} ({name}) reports no memory size; it is not used.")
            continue
        devices.append(
            GpuDevice(
                index=len(devices),
                name=name,
                vram_mib=_mib(row["memory.total"]),
                mig=None,
                uuid=str(info["uuid"]) if info.get("uuid") else None,
                **common,
            )
        )
    return GpuReport(devices=tuple(devices), warnings=tuple(warnings))
