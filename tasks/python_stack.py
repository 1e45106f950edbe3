"""The pod's venv: podforge's pod-side tools and, unless turned off, the pinned ML stack."""

from __future__ import annotations

from pathlib import Path

from pyinfra.api import deploy
from pyinfra.operations import files, pip

from podforge.config import Settings
from podforge.plan import Plan
from podforge.stacks import POD_TOOL_REQUIREMENTS, STACK_PROFILES
from tasks import TEMPLATES

PODFORGE_PACKAGE = Path(__file__).resolve().parent.parent / "podforge"


@deploy("Python stack")
def install(settings: Settings, plan: Plan) -> None:
    pip_bin = f"{settings.venv_dir}/bin/pip"
    pip.venv(name="Create the pod venv", path=settings.venv_dir, python="python3")
    pip.packages(
        name="Install the pod-side tools' requirements",
        packages=list(POD_TOOL_REQUIREMENTS),
        pip=pip_bin,
    )
    files.sync(
        name="Install podforge's pod-side tools",
        src=str(PODFORGE_PACKAGE),
        dest=f"{settings.podforge_dir}/podforge",
        exclude=["*.pyc"],
        exclude_dir=["__pycache__"],
        delete=True,
    )
    files.template(
        name="Install the podforge command",
        src=str(TEMPLATES / "podforge.sh.j2"),
        dest=f"{settings.venv_dir}/bin/podforge",
        mode="755",
        settings=settings,
    )
    if settings.install_python_stack:
        stack = STACK_PROFILES[plan.stack]
        pip.packages(
            name=f"Install the {stack.name} stack",
            packages=[
                f"torch=={stack.torch}",
                f"torchvision=={stack.torchvision}",
                f"torchaudio=={stack.torchaudio}",
                *([f"xformers=={stack.xformers}"] if stack.xformers else []),
            ],
            pip=pip_bin,
        )
