"""The pod's long-running programs, as data (pure): one ComfyUI per planned device, r2sync.

Rendered as supervisor program sections in containers (RunPod, Docker: PID 1 is not
systemd) and as systemd units on VMs, from the same Program. Secrets reach a program
through 0600 env files it reads at start, never its command line; the files' digest is part
of the program's definition, so a changed secret restarts exactly the programs that read it.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict

from podforge.core.config import Settings
from podforge.core.keys import pod_part
from podforge.core.plan import Plan

SUPERVISOR_CONF_DIR = "/etc/supervisor/conf.d"
SYSTEMD_UNIT_DIR = "/etc/systemd/system"
PREFIX = "podforge-"


class Program(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str  # comfyui-0, r2sync
    description: str
    argv: list[str]
    directory: str
    environment: dict[str, str]
    env_files: list[str]  # sourced at start (KEY=VALUE lines), in order
    log: str

    @property
    def command_line(self) -> str:
        return shlex.join(self.argv)

    def shell_command(self) -> str:
        """The env files sourced, then exec: the process's argv is the program's own."""
        if not self.env_files:
            return self.command_line
        sources = "; ".join(f". {shlex.quote(path)}" for path in self.env_files)
        script = f'set -a; {sources}; set +a; exec "$0" "$@"'
        return f"/bin/sh -c {shlex.quote(script)} {self.command_line}"


def secrets_dir(settings: Settings) -> str:
    """0700: files with keys land here, so no upload is ever readable by others meanwhile."""
    return f"{settings.podforge_dir}/secrets"


def boot_fetch(settings: Settings) -> str:
    """A link to the model fetch the boot phase started (absent: it started none). start.sh
    follows it beside supervisord's programs: ComfyUI serves while the models arrive."""
    return f"{settings.podforge_dir}/jobs/boot"


def manifest_path(settings: Settings) -> str:
    return f"{settings.podforge_dir}/manifest.json"


def env_paths(settings: Settings) -> dict[str, str]:
    return {
        "generation": f"{settings.podforge_dir}/generation.env",
        "comfyui_secrets": f"{secrets_dir(settings)}/comfyui.env",
        "r2": f"{secrets_dir(settings)}/r2.env",
    }


def generation_env(settings: Settings) -> str:
    """SteadyDancer's generation defaults (the seed PRD's), where workflows read them."""
    seed = settings.steadydancer_seed if settings.steadydancer_seed != -1 else 106060
    return (
        "# Written by podforge: SteadyDancer generation defaults (override with the settings).\n"
        f"STEADYDANCER_GUIDE_SCALE={settings.steadydancer_guide_scale}\n"
        f"STEADYDANCER_CONDITION_GUIDE={settings.steadydancer_condition_guide}\n"
        f"STEADYDANCER_END_CFG={settings.steadydancer_end_cfg}\n"
        f"STEADYDANCER_SEED={seed}\n"
    )


def comfyui_secrets_env(settings: Settings) -> str:
    lines = ["# Written by podforge (0600): secrets ComfyUI's nodes read."]
    if settings.hf_token is not None:
        lines.append(f"HF_TOKEN={shlex.quote(settings.hf_token.get_secret_value())}")
    return "\n".join(lines) + "\n"


def r2_configured(settings: Settings) -> bool:
    """Whether the settings name a bucket r2sync and the wheelhouse can reach."""
    return bool(
        settings.r2_endpoint and settings.r2_access_key_id and settings.r2_secret_access_key
    )


def r2_env(settings: Settings) -> str:
    values = {
        "R2_ENDPOINT": settings.r2_endpoint,
        "R2_BUCKET": settings.r2_bucket,
        "R2_ACCESS_KEY_ID": settings.r2_access_key_id.get_secret_value()
        if settings.r2_access_key_id
        else None,
        "R2_SECRET_ACCESS_KEY": settings.r2_secret_access_key.get_secret_value()
        if settings.r2_secret_access_key
        else None,
        "R2_KEY_LAYOUT": settings.r2_key_layout,
        "R2_POD_NAME": pod_part(settings.pod_name) if settings.pod_name else None,
    }
    lines = ["# Written by podforge (0600): r2sync's settings."]
    lines += [f"{name}={value}" for name, value in values.items() if value]
    return "\n".join(lines) + "\n"


def _digest(texts: Mapping[str, str], paths: list[str]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(texts[path].encode())
    return digest.hexdigest()[:12]


def software_digest(checkouts: Mapping[str, str], lock_text: str, beside: list[str]) -> str:
    """What ComfyUI runs besides its settings: each checkout's commit (path -> commit), the
    stack lock and the wheels beside it (flash-attn's, the wheelhouse's: each by its source).
    In its section, so a moved pin or a new lock restarts ComfyUI (a node pack is imported
    once, at start)."""
    digest = hashlib.sha256(json.dumps(sorted(checkouts.items())).encode())
    digest.update(lock_text.encode())
    digest.update("".join(beside).encode())
    return digest.hexdigest()[:12]


def programs(
    settings: Settings,
    plan: Plan,
    env_texts: Mapping[str, str],
    software: str,
    proxy: str | None = None,
) -> list[Program]:
    """Every program the pod runs; ``env_texts``: path -> content of the env files;
    ``software``: ComfyUI's software_digest; ``proxy``: the digest of what nginx reads
    (its configuration, the login), None: no login in front of ComfyUI."""
    paths = env_paths(settings)
    logs = f"{settings.workspace_dir}/logs"
    found = []
    comfy_env = [paths["generation"], paths["comfyui_secrets"]]
    for instance in plan.comfyui:
        environment = {
            "PODFORGE_CONFIG_DIGEST": _digest(env_texts, comfy_env),
            "PODFORGE_SOFTWARE_DIGEST": software,
        }
        if instance.cuda_visible_devices:
            environment["CUDA_VISIBLE_DEVICES"] = instance.cuda_visible_devices
        found.append(
            Program(
                name=f"comfyui-{instance.device}",
                description=f"ComfyUI on device {instance.device}, port {instance.port}",
                argv=[f"{settings.venv_dir}/bin/python", "main.py", *instance.args],
                directory=settings.comfyui_dir,
                environment=environment,
                env_files=comfy_env,
                log=f"{logs}/comfyui-{instance.device}.log",
            )
        )
    if proxy is not None:
        found.append(
            Program(
                name="nginx",
                description="the login in front of ComfyUI (nginx)",
                argv=["nginx", "-c", f"{settings.podforge_dir}/nginx.conf", "-g", "daemon off;"],
                directory="/",
                # A changed configuration or password restarts nginx alone.
                environment={"PODFORGE_CONFIG_DIGEST": proxy},
                env_files=[],
                log=f"{logs}/nginx.log",
            )
        )
    if settings.enable_r2_sync:
        found.append(
            Program(
                name="r2sync",
                description="ComfyUI outputs to R2 (podforge r2sync)",
                argv=[
                    f"{settings.tools_dir}/bin/podforge",
                    "r2sync",
                    "--watch",
                    f"{settings.comfyui_dir}/output",
                    "--journal",
                    f"{settings.workspace_dir}/.podforge-r2sync.sqlite",
                ],
                directory=settings.workspace_dir,
                environment={
                    "R2_ENV_FILE": paths["r2"],
                    "PODFORGE_CONFIG_DIGEST": _digest(env_texts, [paths["r2"]]),
                },
                env_files=[],
                log=f"{logs}/r2sync.log",
            )
        )
    return found
