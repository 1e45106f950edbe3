"""ComfyUI behind a login: the credentials on the volume, and nginx's configuration, checked
(`nginx -t`) before it is applied. nginx itself runs as a program beside ComfyUI
(tasks/services.py), restarted when its configuration or the credentials change.

Credentials: the user's (COMFYUI_PASSWORD, COMFYUI_API_TOKEN) are written as given; without
them the first deploy generates strong ones and later deploys keep what the pod holds. They
never pass a command line or a log: `podforge auth show` on the pod prints them.
"""

from __future__ import annotations

import hashlib
import secrets

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.operations import server

from operations import pod_files
from podforge.core.auth import AuthFiles, Credentials, auth_files
from podforge.core.config import Settings
from podforge.core.plan import Plan
from tasks import render
from tasks.desired import Pod


def nginx_conf(settings: Settings) -> str:
    return f"{settings.podforge_dir}/nginx.conf"


@deploy("Login")
def install(settings: Settings, plan: Plan, pod: Pod) -> str | None:
    """Returns the digest of what nginx reads (None: no login), for its program's section."""
    if not settings.comfyui_auth:
        host.noop("comfyui_auth is off: no login in front of ComfyUI (the plan warns)")
        return None
    if settings.phase == "image":
        # The volume (and so the credentials) comes with the pod: the boot phase does this.
        host.noop("the login is set up at boot, on the pod's volume")
        return None
    files = auth_files(settings.workspace_dir)
    # 0711: nginx's workers (www-data) reach the users file in it (0640 root:www-data), no
    # one else may list it, and the credentials themselves are 0600 root.
    pod_files.directories(
        name="The login's directory (0711, on the volume)",
        paths=[files.directory],
        digests=pod.files,
        modes={files.directory: "711"},
    )
    digests = _credentials(settings, pod, files)
    text = render(
        "nginx.conf.j2",
        instances=plan.comfyui,
        listen=settings.comfyui_listen,
        private_listen=settings.comfyui_private_listen,
        files=files,
        pid_file="/run/podforge-nginx.pid",
    )
    conf = nginx_conf(settings)
    if pod_files.is_current(pod.files, conf, text):
        host.noop(f"{conf} is up to date")
    else:
        pod_files.content(
            name="nginx configuration (candidate)",
            dest=f"{conf}.candidate",
            text=text,
            digests=pod.files,
        )
        server.shell(
            name="nginx -t: the candidate is valid, then applied",
            commands=[f"nginx -t -q -c {conf}.candidate && mv {conf}.candidate {conf}"],
        )
    digest = hashlib.sha256(text.encode())
    for sha1 in digests:
        digest.update(sha1.encode())
    return digest.hexdigest()[:12]


def _credentials(settings: Settings, pod: Pod, files: AuthFiles) -> list[str]:
    """Write or keep the credentials; the sha1 of the files nginx reads (users, token map)."""
    present = pod.files["files"]
    if settings.comfyui_password is None and all(path in present for path in files.all()):
        host.noop(f"the ComfyUI login in {files.directory} is kept")
        return [present[files.users]["sha1"], present[files.token_map]["sha1"]]
    if settings.comfyui_password is not None:
        token = settings.comfyui_api_token
        credentials = Credentials.of(
            settings.comfyui_user,
            settings.comfyui_password.get_secret_value(),
            token.get_secret_value() if token else None,
        )
    else:
        credentials = Credentials(
            settings.comfyui_user, secrets.token_urlsafe(18), secrets.token_urlsafe(32)
        )
        logger.warning(
            f"{host.print_prefix}ComfyUI login: user {settings.comfyui_user}, a new password and"
            f" API token in {files.credentials} (0600): read them on the pod with"
            f" `{settings.tools_dir}/bin/podforge auth show`"
        )
    texts = {
        files.credentials: (credentials.as_json() + "\n", "600", None),
        # nginx's workers (www-data) read the users file; the master (root) the token map.
        files.users: (credentials.users_file(), "640", "www-data"),
        files.token_map: (credentials.token_map(), "600", None),
    }
    for path, (text, mode, group) in texts.items():
        pod_files.content(
            name=f"ComfyUI's login: {path.rsplit('/', 1)[1]} ({mode})",
            dest=path,
            text=text,
            digests=pod.files,
            mode=mode,
            group=group,
        )
    return [
        hashlib.sha1(texts[path][0].encode()).hexdigest() for path in (files.users, files.token_map)
    ]
