"""What start.sh needs to run this same deploy on the pod at container start (phase=boot):
the deploy's own files (a bundle, versioned by content), a small venv with pyinfra, and the
settings this deploy used (secrets in a 0600 file), so boot converges to the same wish for
the GPU the pod really has.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import tarfile
from pathlib import Path

from packaging.utils import canonicalize_name
from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import server

from operations import pod_files
from podforge.core.config import SECRET_FIELDS, Settings
from podforge.core.lock import uv_command
from podforge.core.plan import Plan
from podforge.core.stacks import DEPLOYER_REQUIREMENTS
from podforge.settings import saved_settings_paths
from tasks.desired import Pod

REPO = Path(__file__).resolve().parent.parent
# The deploy and what it imports: the sandbox's own group_data stays on the laptop.
BUNDLE = (
    "deploy.py",
    "pyproject.toml",  # podforge's wheel is built from it at boot (controller/tools.py)
    "group_data/all.py",
    "tasks",
    "facts",
    "operations",
    "podforge",
    "templates",
    "locks",
)


@functools.cache
def bundle() -> tuple[str, bytes]:
    """(version, a reproducible tar.gz of the deploy's files)."""
    paths = []
    for entry in BUNDLE:
        path = REPO / entry
        found = [path] if path.is_file() else sorted(path.rglob("*"))
        paths += [p for p in found if p.is_file() and "__pycache__" not in p.parts]
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    version = digest.hexdigest()[:12]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as archive:
        for path in paths:
            info = tarfile.TarInfo(str(path.relative_to(REPO)))
            info.size, info.mtime, info.mode = path.stat().st_size, 0, 0o644
            archive.addfile(info, io.BytesIO(path.read_bytes()))
        marker = version.encode() + b"\n"
        info = tarfile.TarInfo("VERSION")
        info.size, info.mtime, info.mode = len(marker), 0, 0o644
        archive.addfile(info, io.BytesIO(marker))
    return version, buffer.getvalue()


@deploy("Boot phase")
def install(settings: Settings, plan: Plan, pod: Pod) -> None:
    public, secret = saved_settings_paths(settings.podforge_dir)
    pod_files.content(
        name="The settings this deploy used (for the boot phase)",
        dest=public,
        text=json.dumps(
            settings.model_dump(mode="json", exclude={*SECRET_FIELDS, "phase"}), indent=2
        )
        + "\n",
        digests=pod.files,
    )
    secrets = {
        name: getattr(settings, name).get_secret_value()
        for name in sorted(SECRET_FIELDS)
        if getattr(settings, name) is not None
    }
    pod_files.content(
        name="The secrets it used (0600)",
        dest=secret,
        text=json.dumps(secrets) + "\n",
        digests=pod.files,
        mode="600",
    )
    if settings.phase == "boot":
        host.noop("the deploy's files and pyinfra are what is running now")
        return
    deployer = f"{settings.podforge_dir}/deployer"
    installed = {canonicalize_name(n): v for n, v in (pod.software["deployer"] or {}).items()}
    wanted = dict(requirement.split("==") for requirement in DEPLOYER_REQUIREMENTS)
    if all(installed.get(canonicalize_name(name)) == version for name, version in wanted.items()):
        host.noop(f"pyinfra {wanted['pyinfra']} is in {deployer}")
    else:
        # With the tools' uv and the pod's cache: seconds, where pip took half a minute of the
        # pod's first deploy.
        uv = uv_command(settings.tools_dir, settings.uv_cache_dir)
        server.shell(
            name=f"pyinfra {wanted['pyinfra']} for the boot phase ({deployer})",
            commands=[
                f"{uv} venv --quiet --allow-existing --python python3 {deployer}",
                f"{uv} pip install --quiet --python {deployer}/bin/python --compile-bytecode "
                + " ".join(DEPLOYER_REQUIREMENTS),
            ],
        )
    version, data = bundle()
    target = f"{settings.podforge_dir}/deploy"
    if pod_files.is_current(pod.files, f"{target}/VERSION", version + "\n"):
        host.noop(f"the deploy's files {version} are in {target}")
        return
    archive = f"{settings.podforge_dir}/deploy-{version}.tar.gz"
    pod_files.content(
        name=f"The deploy's files {version}", dest=archive, text=data, digests=pod.files
    )
    server.shell(
        name=f"Unpack the deploy's files into {target}",
        commands=[
            f"rm -rf {target}.new && mkdir -p {target}.new"
            f" && tar -xzf {archive} -C {target}.new"
            f" && rm -rf {target} && mv {target}.new {target} && rm -f {archive}"
        ],
    )
