"""System packages the pod needs (Debian/Ubuntu), and the CUDA toolkit when a build needs nvcc."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt

from podforge.core.config import Settings
from podforge.core.plan import Plan
from tasks.desired import Pod

NVIDIA_REPOS = "https://developer.download.nvidia.com/compute/cuda/repos"


@deploy("System packages")
def install(settings: Settings, plan: Plan, pod: Pod) -> None:
    if settings.phase == "boot":
        # The image or the pod deploy installed them; a boot must not wait on apt.
        host.noop("system packages came with the image or the pod deploy")
        return
    missing = sorted(set(plan.system_packages) - set(pod.software["debs"]))
    if missing:
        apt.packages(
            name=f"Install system packages ({', '.join(missing)})",
            packages=missing,
            update=True,
            cache_time=24 * 3600,
        )
    else:
        # pyinfra's apt.packages would read dpkg, the date and apt's stamp twice each.
        host.noop(f"the {len(plan.system_packages)} system packages are installed")
    if not plan.python_stack.needs_nvcc:
        return
    if pod.software["nvcc"]:
        host.noop(f"nvcc is at {pod.software['nvcc']}")
        return
    # NVIDIA's apt repository for this OS (ubuntu2204, debian12, ...) and the profile's CUDA.
    keyring = f"{NVIDIA_REPOS}/{pod.host['os']}/{pod.host['machine']}/cuda-keyring_1.1-1_all.deb"
    apt.deb(name="NVIDIA's CUDA apt repository", src=keyring)
    apt.packages(
        name=f"CUDA toolkit {plan.python_stack.cuda} (nvcc, for source builds)",
        packages=[f"cuda-toolkit-{plan.python_stack.cuda.replace('.', '-')}"],
        update=True,
    )
