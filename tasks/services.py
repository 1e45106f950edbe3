"""The pod's programs: ComfyUI per planned device and r2sync, under supervisor in containers
or systemd on VMs; their env files; start.sh, the container's entrypoint (the boot phase).

Restarts only what changed: each program is its own supervisor group, so `supervisorctl
update` restarts exactly the programs whose section changed (a changed env file, a moved
node pin or a new lock changes the section through a digest); on systemd, exactly the units
whose unit or env changed.
"""

from __future__ import annotations

import json

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import server

from operations import pod_files
from podforge.core import services
from podforge.core.config import Settings
from podforge.core.plan import Plan
from tasks import render
from tasks.desired import Pod, StackLock

SUPERVISORD_CONF = "/etc/supervisor/supervisord.conf"


@deploy("R2 settings")
def r2_settings(settings: Settings, pod: Pod) -> None:
    """r2sync's and the wheelhouse's bucket settings (0600), before the stack: the wheelhouse
    fetches or publishes built wheels while the Python environment installs. At run time, as
    every secret: never in an image."""
    if settings.enable_r2_sync or services.r2_configured(settings):
        pod_files.content(
            name="r2.env (0600)",
            dest=services.env_paths(settings)["r2"],
            text=services.r2_env(settings),
            digests=pod.files,
            mode="600",
        )


@deploy("Services")
def install(
    settings: Settings,
    plan: Plan,
    pod: Pod,
    lock: StackLock,
    venv_synced: bool,
    proxy: str | None,
) -> None:
    """``venv_synced``: the deploy changed the venv, so ComfyUI restarts (it imported the
    old one at its start); ``proxy``: the digest of nginx's configuration and login (None:
    no login)."""
    pod_files.content(
        name="The pod's plan",
        dest=f"{settings.podforge_dir}/plan.json",
        # Without the phase: the boot phase's plan for the same GPU is the same file.
        text=json.dumps(plan.model_dump(mode="json", exclude={"phase"}), indent=2) + "\n",
        digests=pod.files,
    )
    paths = services.env_paths(settings)
    env_texts = {
        paths["generation"]: services.generation_env(settings),
        paths["comfyui_secrets"]: services.comfyui_secrets_env(settings),
    }
    if settings.enable_r2_sync:
        env_texts[paths["r2"]] = services.r2_env(settings)
    for path, text in env_texts.items():
        if path == paths["r2"]:
            continue  # written before the stack (r2_settings): the wheelhouse reads it too
        secret = path != paths["generation"]
        pod_files.content(
            name=f"{path.rsplit('/', 1)[1]}{' (0600)' if secret else ''}",
            dest=path,
            text=text,
            digests=pod.files,
            mode="600" if secret else "644",
        )
    pod_files.content(
        name="start.sh (the container's entrypoint: the boot phase, then supervisord)",
        dest=settings.start_script,
        text=render(
            "start.sh.j2",
            settings=settings,
            boot_fetch=services.boot_fetch(settings),
            manifest=services.manifest_path(settings),
        ),
        digests=pod.files,
        mode="755",
    )
    software = services.software_digest(
        {dest: pin.commit for dest, pin in settings.checkouts().items()},
        lock.text,
        [f"{wheel.name} {wheel.source}" for wheel in plan.python_stack.built],
    )
    programs = services.programs(settings, plan, env_texts, software, proxy)
    comfyui = [p.name for p in programs if p.name.startswith("comfyui-")] if venv_synced else []
    if pod.host["systemd"]:
        _systemd(settings, pod, programs, env_texts, comfyui)
    else:
        _supervisor(settings, pod, programs, comfyui)


def _supervisor(
    settings: Settings, pod: Pod, programs: list[services.Program], restart: list[str]
) -> None:
    wanted = {
        f"{services.SUPERVISOR_CONF_DIR}/{services.PREFIX}{p.name}.conf": render(
            "supervisor-program.conf.j2", program=p
        )
        for p in programs
    }
    changed = [
        path for path, text in wanted.items() if not pod_files.is_current(pod.files, path, text)
    ]
    for path, text in wanted.items():
        pod_files.content(
            name=f"supervisor program {path.rsplit('/', 1)[1]}",
            dest=path,
            text=text,
            digests=pod.files,
        )
    stale = _stale(pod, f"{services.SUPERVISOR_CONF_DIR}/{services.PREFIX}", wanted)
    if stale:
        server.shell(name="Programs no longer planned", commands=[f"rm -f {' '.join(stale)}"])
    if settings.phase != "pod":
        # image: nothing runs during a build; boot: start.sh runs supervisord next.
        host.noop(f"supervisord starts with the container (phase {settings.phase})")
        return
    if not pod.software["supervisord"]:
        # Debian's package does not start it in a container; it reads every section.
        server.shell(name="Start supervisord", commands=[f"supervisord -c {SUPERVISORD_CONF}"])
    else:
        if changed or stale:
            server.shell(
                name=f"supervisorctl update ({', '.join(_names(changed + stale))})",
                commands=["supervisorctl update"],
            )
        # `update` restarted those whose section changed; the others run the old venv.
        restart = [name for name in restart if name not in _names(changed)]
        if restart:
            server.shell(
                name=f"Restart {', '.join(restart)} (the venv was synced)",
                commands=[f"supervisorctl restart {' '.join(restart)}"],
            )
        if not (changed or stale or restart):
            host.noop("every program is as planned")


def _systemd(
    settings: Settings,
    pod: Pod,
    programs: list[services.Program],
    env_texts: dict[str, str],
    synced: list[str],
) -> None:
    wanted = {
        f"{services.SYSTEMD_UNIT_DIR}/{services.PREFIX}{p.name}.service": (
            p,
            render("systemd.service.j2", program=p),
        )
        for p in programs
    }
    changed_env = {
        p for p, text in env_texts.items() if not pod_files.is_current(pod.files, p, text)
    }
    restart = []
    for path, (program, text) in wanted.items():
        pod_files.content(
            name=f"systemd unit {path.rsplit('/', 1)[1]}", dest=path, text=text, digests=pod.files
        )
        reads = set(program.env_files) | {program.environment.get("R2_ENV_FILE", "")}
        if (
            not pod_files.is_current(pod.files, path, text)
            or reads & changed_env
            or program.name in synced
        ):
            restart.append(path.rsplit("/", 1)[1])
    stale = _stale(pod, f"{services.SYSTEMD_UNIT_DIR}/{services.PREFIX}", wanted)
    if settings.phase == "image":
        return
    commands = [f"systemctl disable --now {unit.rsplit('/', 1)[1]}" for unit in stale]
    if stale:
        commands.append(f"rm -f {' '.join(stale)}")
    if restart or stale:
        commands.append("systemctl daemon-reload")
    commands += [f"systemctl enable {unit} && systemctl restart {unit}" for unit in restart]
    if commands:
        server.shell(name=f"systemd: {', '.join(restart) or 'reload'}", commands=commands)


def _stale(pod: Pod, prefix: str, wanted: dict[str, object]) -> list[str]:
    return sorted(p for p in pod.files["files"] if p.startswith(prefix) and p not in wanted)


def _names(paths: list[str]) -> list[str]:
    return [p.rsplit("/", 1)[1].removeprefix(services.PREFIX).rsplit(".", 1)[0] for p in paths]
