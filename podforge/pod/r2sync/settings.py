"""r2sync's settings: R2_* from the environment, or from the 0600 file R2_ENV_FILE names
(podforge/secrets.py), and the pod's identity in keys."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from podforge.core.errors import PodforgeError
from podforge.core.keys import DEFAULT_LAYOUT, LayoutError, check_layout, pod_part
from podforge.secrets import SecretFileError, env_file

DEFAULT_BUCKET = "runpod"
REQUIRED = ("R2_ENDPOINT", "R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY")


class SyncError(PodforgeError, RuntimeError):
    """Why a file (or the whole sync) failed; one line, never a secret."""


class Fatal(SyncError):
    """Retrying cannot help: credentials, the bucket, the settings."""


@dataclass(frozen=True)
class R2Settings:
    endpoint: str
    bucket: str
    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    layout: str = DEFAULT_LAYOUT
    pod_name: str | None = None  # the inventory's, for {pod} off RunPod


def r2_settings(environ: Mapping[str, str]) -> R2Settings:
    """R2_* from the environment, or from the 0600 file R2_ENV_FILE names."""
    try:
        values = (
            env_file(environ["R2_ENV_FILE"], "R2_ENV_FILE") if environ.get("R2_ENV_FILE") else {}
        )
    except SecretFileError as error:
        raise Fatal(str(error)) from None
    values.update({name: value for name, value in environ.items() if name.startswith("R2_")})
    missing = [name for name in REQUIRED if not values.get(name)]
    if missing:
        raise Fatal(f"{', '.join(missing)} not set (in the environment or R2_ENV_FILE)")
    if not values["R2_ENDPOINT"].startswith(("https://", "http://")):
        raise Fatal("R2_ENDPOINT is not accepted: expected an https:// URL")
    try:
        layout = check_layout(values.get("R2_KEY_LAYOUT") or DEFAULT_LAYOUT)
    except LayoutError as error:
        raise Fatal(f"R2_KEY_LAYOUT is not accepted: {error}") from None
    return R2Settings(
        endpoint=values["R2_ENDPOINT"],
        bucket=values.get("R2_BUCKET") or DEFAULT_BUCKET,
        access_key_id=values["R2_ACCESS_KEY_ID"],
        secret_access_key=values["R2_SECRET_ACCESS_KEY"],
        layout=layout,
        pod_name=values.get("R2_POD_NAME") or None,
    )


def pod_identity(environ: Mapping[str, str], settings: R2Settings) -> str:
    """{pod} of the keys: RunPod's pod id, else the inventory's pod name, else the host name;
    each stays the same across restarts of that pod."""
    name = environ.get("RUNPOD_POD_ID") or settings.pod_name or socket.gethostname()
    try:
        return pod_part(name)
    except LayoutError as error:
        raise Fatal(f"the pod's name cannot be used in keys: {error}") from None
