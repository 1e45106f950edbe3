"""The directories later tasks write into, made first: the secrets directory (0700, so a key
uploaded into it is never readable by others, not even before its chmod) and the logs."""

from __future__ import annotations

from pyinfra.api import deploy

from operations import pod_files
from podforge.core.config import Settings
from podforge.core.services import secrets_dir
from tasks.desired import Pod


@deploy("Directories")
def install(settings: Settings, pod: Pod) -> None:
    pod_files.directories(
        name="Secrets directory (0700) and logs",
        paths=[secrets_dir(settings), f"{settings.workspace_dir}/logs"],
        digests=pod.files,
        modes={secrets_dir(settings): "700"},
    )
