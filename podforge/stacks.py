"""Python stacks: consistent sets of pinned wheels (data). The python_stack task installs one."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StackProfile:
    """A consistent set of wheels. Pins are data; the python_stack task installs them."""

    name: str
    torch: str
    torchvision: str
    torchaudio: str
    xformers: str | None
    flash_attn_wheel: str | None  # GitHub release asset; PyPI only has an sdist
    torch_major_minor: tuple[int, int]
    approx_bytes: int


STACK_PROFILES: dict[str, StackProfile] = {
    "torch25-cu124": StackProfile(
        name="torch25-cu124",
        torch="2.5.1",
        torchvision="0.20.1",
        torchaudio="2.5.1",
        xformers="0.0.28.post3",
        flash_attn_wheel=(
            "https://github.com/Dao-AILab/flash-attention/releases/download/v2.7.4.post1/"
            "flash_attn-2.7.4.post1+cu12torch2.5cxx11abiFALSE-{py}-{py}-linux_x86_64.whl"
        ),
        torch_major_minor=(2, 5),
        approx_bytes=9 * 10**9,
    ),
    # Unverified pins beyond torch's own trio: kept in data so they change in one place.
    "torch27-cu128": StackProfile(
        name="torch27-cu128",
        torch="2.7.1",
        torchvision="0.22.1",
        torchaudio="2.7.1",
        xformers="0.0.31.post1",
        flash_attn_wheel=None,
        torch_major_minor=(2, 7),
        approx_bytes=10 * 10**9,
    ),
}
DEFAULT_STACK = "torch25-cu124"
TURBODIFFUSION_MIN_TORCH = (2, 7)
OPENMMLAB_STACK = "torch25-cu124"  # mmcv 2.1.0 is built from source against torch 2.5.1


# What the pod-side tools (python -m podforge ...) need in the pod's venv.
POD_TOOL_REQUIREMENTS: tuple[str, ...] = ("pydantic==2.14.3", "huggingface_hub==2.4.0")
