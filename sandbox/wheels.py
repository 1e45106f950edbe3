"""Stand-in wheels for the torch family and flash-attn: the real ones are gigabytes of CUDA.

Each carries the profile's version with a ``+sandbox`` local label: ``torch==2.5.1`` accepts
it, and pip prefers it over PyPI's 2.5.1 (a local version sorts higher), so the deploy asks
for exactly what it asks for on a real pod while pods get these from a find-links dir. Every
other requirement of ComfyUI and the nodes comes from PyPI for real.
"""

from __future__ import annotations

from pathlib import Path

from podforge.plan import flash_attn_wheel
from podforge.stacks import DEFAULT_STACK, STACK_PROFILES
from podforge.wheel import build_wheel

# Inside each pod: pip's find-links dir and a file:// mirror of flash-attn's releases.
POD_WHEELS = "/opt/sandbox/wheels"
POD_RELEASES = "/opt/sandbox/releases"


# torch.cuda of the stand-in: the GPUs the pod's (fake) nvidia-smi lists, as torch would
# see them through the driver. A GPU mock, fed by the recorded nvidia-smi profiles.
TORCH_CUDA = '''"""podforge sandbox stand-in for torch.cuda: the devices nvidia-smi -L lists."""
import os
import shutil
import subprocess


def device_count() -> int:
    if shutil.which("nvidia-smi") is None:
        return 0
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    gpus = [line for line in listed.stdout.splitlines() if line.startswith("GPU ")]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return len(gpus) if visible is None else min(len(gpus), len(visible.split(",")))


def is_available() -> bool:
    return device_count() > 0
'''


def _standin(name: str, version: str) -> dict[str, bytes]:
    module = name.replace("-", "_")
    text = (
        f'"""podforge sandbox stand-in for {name} (no GPU here; the real wheel is large)."""\n'
        f'__version__ = "{version}"\n'
    )
    files = {f"{module}/__init__.py": text.encode()}
    if module == "torch":
        files["torch/__init__.py"] += b"from torch import cuda  # noqa: E402\n"
        files["torch/cuda.py"] = TORCH_CUDA.encode()
    return files


def build_standins(base: Path, python: tuple[int, int] = (3, 11)) -> None:
    """The default profile's torch family into ``base/wheels``, flash-attn into ``releases``."""
    profile = STACK_PROFILES[DEFAULT_STACK]
    wheels = base / "wheels"
    for pin in profile.pins:
        name, version = pin.split("==")
        local = f"{version}+sandbox"
        requires = [f"torch=={profile.torch}"] if name != "torch" else []
        build_wheel(wheels, name, local, _standin(name, local), requires=requires)
    url, why_not = flash_attn_wheel(profile, python, "x86_64", f"file://{POD_RELEASES}")
    if url is None:
        raise RuntimeError(f"no flash-attn wheel for the sandbox pods: {why_not}")
    # The release's own file name (version, CUDA, torch, ABI, Python tag) under its tag dir.
    relative = url.removeprefix(f"file://{POD_RELEASES}/")
    tag_dir, filename = relative.split("/")
    version = filename.split("-")[1]
    build_wheel(
        base / "releases" / tag_dir,
        "flash_attn",
        version,
        _standin("flash_attn", version),
        requires=["torch", "einops"],
        tag=filename.removesuffix(".whl").split("-", 2)[2],
    )
