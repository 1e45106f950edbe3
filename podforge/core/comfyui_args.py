"""ComfyUI's real command line (comfy/cli_args.py), and nothing more.

Every flag podforge emits or accepts from ``COMFYUI_ARGS`` is checked against this table:
ComfyUI exits on an unknown flag, so a wrong one would keep the pod from serving.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from podforge.core.errors import PodforgeError
from podforge.core.paths import PathError, setting_path

# Mutually exclusive VRAM modes.
VRAM_MODE_FLAGS: frozenset[str] = frozenset(
    {"--gpu-only", "--highvram", "--normalvram", "--lowvram", "--novram", "--cpu"}
)

# flag -> number of values it takes
KNOWN_FLAGS: dict[str, int] = {
    **{flag: 0 for flag in VRAM_MODE_FLAGS},
    "--reserve-vram": 1,
    "--disable-smart-memory": 0,
    "--cpu-vae": 0,
    "--force-fp16": 0,
    "--use-sage-attention": 0,
    "--use-flash-attention": 0,
    "--listen": 1,
    "--port": 1,
    "--output-directory": 1,
    "--extra-model-paths-config": 1,
}

# Set by podforge per instance; users change them through COMFYUI_LISTEN / COMFYUI_PORT.
MANAGED_FLAGS: dict[str, str] = {"--listen": "COMFYUI_LISTEN", "--port": "COMFYUI_PORT"}


class ComfyArgsError(PodforgeError, ValueError):
    """A ComfyUI argument list that ComfyUI would reject."""


# Flags whose value is a path on the pod: it reaches the program's command line in a unit.
PATH_FLAGS = ("--output-directory", "--extra-model-paths-config")


def parse_comfyui_args(value: str | Sequence[str]) -> list[str]:
    """Split and check user-supplied ComfyUI arguments; raise ComfyArgsError on a bad one."""
    tokens = shlex.split(value) if isinstance(value, str) else list(value)
    vram_modes: list[str] = []
    index = 0
    while index < len(tokens):
        flag = tokens[index]
        if flag not in KNOWN_FLAGS:
            raise ComfyArgsError(
                f"unknown ComfyUI flag {flag!r}; ComfyUI accepts: {', '.join(sorted(KNOWN_FLAGS))}"
            )
        if flag in MANAGED_FLAGS:
            raise ComfyArgsError(
                f"{flag} is set by podforge for each instance; use {MANAGED_FLAGS[flag]} instead"
            )
        arity = KNOWN_FLAGS[flag]
        values = tokens[index + 1 : index + 1 + arity]
        if len(values) < arity or any(v.startswith("--") for v in values):
            raise ComfyArgsError(f"ComfyUI flag {flag} needs a value")
        if flag == "--reserve-vram":
            try:
                float(values[0])
            except ValueError:
                raise ComfyArgsError(
                    f"--reserve-vram takes a number of GB, got {values[0]!r}"
                ) from None
        if flag in PATH_FLAGS:
            try:
                setting_path(values[0])
            except PathError as error:
                raise ComfyArgsError(f"{flag}: {error}") from None
        if flag in VRAM_MODE_FLAGS:
            vram_modes.append(flag)
        index += 1 + arity
    if len(vram_modes) > 1:
        raise ComfyArgsError(
            f"ComfyUI VRAM modes are mutually exclusive, got {' and '.join(vram_modes)}"
        )
    return tokens


def has_vram_mode(args: Sequence[str]) -> bool:
    return any(arg in VRAM_MODE_FLAGS for arg in args)
