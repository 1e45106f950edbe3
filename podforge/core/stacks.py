"""Python stacks: consistent sets of pinned wheels and the constraints around them (data).

A profile's pins and constraints are resolved together with ComfyUI's and every node's
requirements (podforge/core/environment.py), so no node can move torch, numpy's major version or
another pin. Facts behind each value: docs/facts.md#python-stack.
"""

from __future__ import annotations

from dataclasses import dataclass

FLASH_ATTN_MIRROR = "https://github.com/Dao-AILab/flash-attention/releases/download"


@dataclass(frozen=True)
class FlashAttnRelease:
    """A flash-attn GitHub release: real wheels are its assets (PyPI has only an sdist)."""

    version: str
    torch_min: tuple[int, int]
    torch_max: tuple[int, int]
    python_tags: tuple[str, ...]  # CPython tags the release ships wheels for
    machines: tuple[str, ...] = ("x86_64",)


FLASH_ATTN_RELEASES: tuple[FlashAttnRelease, ...] = (
    FlashAttnRelease("2.7.4.post1", (2, 2), (2, 6), ("cp310", "cp311", "cp312", "cp313")),
    FlashAttnRelease("2.8.3", (2, 4), (2, 8), ("cp310", "cp311", "cp312", "cp313")),
)
# The sha256 of release assets, by file name: a fetched asset that differs is refused. An
# asset missing here is fetched once and its hash recorded in the wheelhouse (the plan warns);
# the settings' flash_attn_sha256 pins more (docs/facts.md#python-stack says where these come from).
FLASH_ATTN_SHA256: dict[str, str] = {
    "flash_attn-2.7.4.post1+cu12torch2.5cxx11abiFALSE-cp311-cp311-linux_x86_64.whl": (
        "d944fc7d2f962bce83fc4708c2fc0c21eaf8255962a0b350ae919362a51b7ef2"
    ),
}


@dataclass(frozen=True)
class StackProfile:
    """A consistent set of wheels. Pins are data; the pod's `podforge stack` installs them."""

    name: str
    torch: str
    torchvision: str
    torchaudio: str
    xformers: str | None
    cuda: str  # the CUDA the torch build targets: nvcc for source builds must match it
    cxx11_abi: bool  # torch._C._GLIBCXX_USE_CXX11_ABI of this torch build
    flash_attn: str | None  # release version (FLASH_ATTN_RELEASES)
    torch_index_url: str | None  # None: PyPI's build is this CUDA build
    # Traps seen when nodes resolve unpinned beside this torch.
    constraints: tuple[str, ...]
    torch_major_minor: tuple[int, int]
    approx_bytes: int
    # The GPU architectures this torch build carries kernels for (its
    # torch.cuda.get_arch_list(), read from the wheel): the plan matches devices against it.
    architectures: tuple[str, ...]

    @property
    def pins(self) -> tuple[str, ...]:
        """The profile's own packages, exact."""
        return (
            f"torch=={self.torch}",
            f"torchvision=={self.torchvision}",
            f"torchaudio=={self.torchaudio}",
            *((f"xformers=={self.xformers}",) if self.xformers else ()),
        )


# With numpy<2 every cv2 provider stays below 4.12 (built against numpy 2), at one version.
OPENCV_BELOW_NUMPY2 = (
    "opencv-python<4.12",
    "opencv-python-headless<4.12",
    "opencv-contrib-python<4.12",
    "opencv-contrib-python-headless<4.12",
)

# Found by starting ComfyUI with every node at its pin on torch 2.8 (tests/e2e/test_software.py):
# transformers 5 imports there (it needs torch.accelerator, torch >= 2.6), so it has no cap.
TORCH28_CONSTRAINTS: tuple[str, ...] = (
    "numpy<2",  # mediapipe and the GGUF loader, whatever the torch
    "onnxruntime-gpu<=1.26.0",  # 1.27+ is a CUDA 13 build
    *OPENCV_BELOW_NUMPY2,
)
# PyTorch's CUDA 12.8 wheels: Volta to Blackwell; Maxwell and Pascal were dropped.
TORCH28_ARCHITECTURES = ("sm_70", "sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120")

STACK_PROFILES: dict[str, StackProfile] = {
    "torch25-cu124": StackProfile(
        name="torch25-cu124",
        torch="2.5.1",  # PyPI's 2.5.1 is the CUDA 12.4 build
        torchvision="0.20.1",
        torchaudio="2.5.1",
        xformers="0.0.28.post3",  # pins torch==2.5.1 exactly
        cuda="12.4",
        cxx11_abi=False,
        flash_attn="2.7.4.post1",
        torch_index_url=None,
        constraints=(
            "numpy<2",  # mediapipe and the GGUF loader
            # 5.x calls torch.accelerator (torch >= 2.6): WanVideoWrapper fails to import.
            "transformers<5",
            "onnxruntime-gpu<=1.26.0",  # 1.27+ is a CUDA 13 build
            *OPENCV_BELOW_NUMPY2,
        ),
        torch_major_minor=(2, 5),
        approx_bytes=9 * 10**9,
        architectures=("sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"),
    ),
    "torch28-cu128": StackProfile(
        name="torch28-cu128",
        torch="2.8.0",  # PyPI's 2.8.0 is the CUDA 12.8 build (nvidia-cuda-runtime-cu12 12.8)
        torchvision="0.23.0",
        torchaudio="2.8.0",
        xformers="0.0.32.post2",  # pins torch==2.8.0 exactly
        cuda="12.8",
        cxx11_abi=True,
        flash_attn="2.8.3",
        torch_index_url=None,
        constraints=TORCH28_CONSTRAINTS,
        torch_major_minor=(2, 8),
        approx_bytes=10 * 10**9,
        architectures=TORCH28_ARCHITECTURES,
    ),
}
DEFAULT_STACK = "torch25-cu124"
# The pod tools' own lock (locks/tools.txt): podforge fetch, r2sync and verify run from a small
# venv of their own, installed in seconds before the stack, at the versions they were written
# for (a stack's ComfyUI caps huggingface_hub through transformers).
TOOLS_LOCK = "tools"
TURBODIFFUSION_MIN_TORCH = (2, 7)  # TurboDiffusion's kernels
OPENMMLAB_STACK = "torch25-cu124"  # mmcv 2.1.0 is built from source against torch 2.5.1


@dataclass(frozen=True)
class SourceWheel:
    """A wheel no index serves, built from its sdist once per key (what it compiles against,
    the kernels) into the wheelhouse (podforge/core/wheelhouse.py) and shared by the fleet."""

    name: str
    version: str
    source: str  # the sdist's URL
    source_sha256: str
    against: tuple[str, ...]  # distributions it compiles against: their versions key it
    environment: tuple[tuple[str, str], ...]  # build variables of every build
    imports: tuple[str, ...]  # what verify imports to prove it loads


@dataclass(frozen=True)
class StackFeature:
    """What a feature adds to a profile's lock (``locks/<profile>+<name>.txt``): packages from
    PyPI, constraints and overrides, and wheels the wheelhouse builds beside the lock."""

    name: str
    packages: tuple[str, ...]
    constraints: tuple[str, ...]
    overrides: tuple[str, ...]  # uv's --overrides: a dependency's requirement replaced
    built: tuple[SourceWheel, ...]
    imports: tuple[str, ...]  # what verify imports in ComfyUI's venv

    @property
    def dropped(self) -> tuple[str, ...]:
        """The distributions its overrides drop (a marker never true): none is installed."""
        return tuple(line.split(";", 1)[0].strip() for line in self.overrides)


# mmcv has no wheel for torch 2.5 / CUDA 12.4 anywhere (docs/stack-and-locks.md#openmmlab):
# PyPI's sdist, built without isolation (its setup.py imports the venv's torch).
MMCV = SourceWheel(
    name="mmcv",
    version="2.1.0",
    source=(
        "https://files.pythonhosted.org/packages/a7/19/"
        "f97f0fd4d432113a232e75f965335be6b7bb6557ae9faf8051e9a012cadd/mmcv-2.1.0.tar.gz"
    ),
    source_sha256="d387bcab66b467479b6660310e23746cfc79c6e57acf04094680adb499a5cd3f",
    against=("torch",),
    environment=(("MMCV_WITH_OPS", "1"),),  # its compiled ops (mmcv.ops), which mmpose uses
    imports=("mmcv.ops",),
)
OPENMMLAB = StackFeature(
    name="openmmlab",
    packages=(
        "mmengine==0.10.7",
        "mmdet==3.3.0",  # its import refuses mmcv >= 2.2
        "mmpose==1.3.2",
        # mmcv 2.1.0's own requirements: its wheel is installed beside the lock, without them.
        "addict",
        "packaging",
        "pillow",
        "pyyaml",
        "yapf",
        "ninja",  # mmcv's build compiles its ops in parallel with it
    ),
    # mmcv 2.1.0's setup.py imports pkg_resources, which setuptools 81 removed.
    constraints=("setuptools<81",),
    # mmpose asks for chumpy, whose sdist cannot build (its setup.py reads pip's internals);
    # only mmpose's SMPL body-model code imports it. A marker never true drops it.
    overrides=("chumpy ; sys_platform == 'never'",),
    built=(MMCV,),
    imports=("mmcv.ops", "mmdet", "mmpose"),
)
STACK_FEATURES: dict[str, StackFeature] = {OPENMMLAB.name: OPENMMLAB}

# Distributions that install the same import package: when several are in one environment
# the last installed wins, so the plan names the winner (first present in this order).
SHARED_IMPORTS: dict[str, tuple[str, ...]] = {
    # contrib is a superset of the plain build; the GUI builds need libgl1 (system task).
    "cv2": (
        "opencv-contrib-python",
        "opencv-python",
        "opencv-contrib-python-headless",
        "opencv-python-headless",
    ),
    # The CPU build shadows the GPU one.
    "onnxruntime": ("onnxruntime-gpu", "onnxruntime"),
}

# Debian/Ubuntu packages every pod needs (the system task; the image's stack layer).
# libgl1/libglib2.0-0: the GUI OpenCV builds' cv2 does not import without them.
SYSTEM_PACKAGES: tuple[str, ...] = (
    "ca-certificates",
    "curl",
    "git",
    "python3-venv",
    "supervisor",
    "libgl1",
    "libglib2.0-0",
)
# What a wheel built on the pod (mmcv) compiles with: a C++ compiler and the Python headers.
BUILD_PACKAGES: tuple[str, ...] = ("build-essential", "python3-dev")
# The login in front of ComfyUI (comfyui_auth): Debian's and Ubuntu's nginx.
PROXY_PACKAGES: tuple[str, ...] = ("nginx",)

# What runs the deploy on the pod itself at container start (start.sh, phase=boot): pyinfra
# and what the deploy imports, in a venv of their own (the laptop's versions).
DEPLOYER_REQUIREMENTS: tuple[str, ...] = (
    "pyinfra==3.10.0",
    "jinja2==3.1.6",
    "pydantic==2.14.3",
    "packaging==26.3",
    "tomli==2.5.0",  # pyproject.toml read by the controller on a Python 3.10 pod
)

UV = "uv==0.13.9"
# Every uv run, on the laptop and on pods: TLS through the system's CAs (a proxy's CA is
# there, not in uv's bundled roots), and never a Python download from GitHub behind our back.
UV_ENVIRONMENT = {"UV_SYSTEM_CERTS": "1", "UV_PYTHON_DOWNLOADS": "never"}

# Locked with every stack beside ComfyUI's and the nodes' requirements: triton imports
# setuptools, which a venv made by uv lacks; flash-attn (installed from its release wheel,
# outside the lock: it is no PyPI wheel) needs einops. (The pod tools have their own venv
# and lock, TOOLS_LOCK.)
STACK_EXTRAS: tuple[str, ...] = ("setuptools", "einops")


if __name__ == "__main__":
    # docker/Dockerfile installs the deployer from this file alone, before the rest is copied.
    print("\n".join(DEPLOYER_REQUIREMENTS))
