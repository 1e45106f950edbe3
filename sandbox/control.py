"""Start and stop the whole sandbox: pods, the hub, the S3 server. State in one 0600 file.

python -m sandbox up --gpus rtx-4080-super,h100 [--file-size BYTES]
python -m sandbox status
python -m sandbox down
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from podforge.core.config import Settings
from podforge.core.services import boot_fetch
from sandbox.pods import Pod, is_alive, is_mounted, launch, reap, start_pod, stop_pod, wait_for_ssh
from sandbox.repos import build_repos
from sandbox.rootfs import ensure_rootfs
from sandbox.settings import sandbox_settings
from sandbox.wheels import build_standins, warm_uv_cache

REPO = Path(__file__).resolve().parent.parent


def default_base() -> Path:
    """Where the sandbox lives: $PODFORGE_SANDBOX_DIR, else .sandbox/ in the repo."""
    return Path(os.environ.get("PODFORGE_SANDBOX_DIR", REPO / ".sandbox"))


STATE_NAME = "state.json"
S3_BUCKET = "podforge-outputs"


def state_path(base: Path | None = None) -> Path:
    base = base or default_base()
    return base / STATE_NAME


def load_state(base: Path | None = None) -> dict[str, Any]:
    base = base or default_base()
    path = state_path(base)
    if not path.exists():
        raise FileNotFoundError(f"no sandbox is running ({path} is missing): python -m sandbox up")
    return json.loads(path.read_text())


def _save_state(base: Path, state: dict[str, Any]) -> None:
    path = state_path(base)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(state, out, indent=2)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_port(port: int, pid: int, what: str, log: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(pid):
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"{what} exited during start: {' / '.join(tail)}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{what} did not listen on 127.0.0.1:{port}")


def _spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> int:
    with open(log, "ab") as out:
        process = subprocess.Popen(
            argv,
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            cwd=REPO,
        )
    return process.pid


def _ssh_key(base: Path) -> Path:
    key = base / "ssh" / "id_ed25519"
    if not key.exists():
        key.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
        subprocess.run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "podforge-sandbox",
                "-f",
                str(key),
            ],
            check=True,
        )
    return key


def up(
    gpus: list[str],
    base: Path | None = None,
    first_address: int = 2,
    file_size: int = 64 * 1024,
    sizes: dict[str, int] | None = None,
    hub_token: str | None = None,
    gated: list[str] | None = None,
    offer_xet: bool = True,
) -> dict[str, Any]:
    """Start pods (one per GPU profile), the hub and S3; return the state. All or nothing.

    Pod i listens on 127.0.0.{first_address + i}. The hub offers Xet like the real one does
    for large files, unless ``offer_xet`` is False.
    """
    base = base or default_base()
    base.mkdir(parents=True, exist_ok=True)
    if state_path(base).exists():
        raise RuntimeError(f"a sandbox is already up in {base}: python -m sandbox down first")
    rootfs = ensure_rootfs()
    logs = base / "logs"
    logs.mkdir(exist_ok=True)
    key = _ssh_key(base)
    state: dict[str, Any] = {"base": str(base), "ssh_key": str(key), "pods": []}
    _save_state(base, state)  # from here on, `down` can clean up whatever did start
    try:
        public_key = key.with_suffix(".pub").read_text()
        state["standins"] = build_standins(base / "standins")
        warm_uv_cache()
        pods = []
        for i, gpu in enumerate(gpus):
            pods.append(
                start_pod(
                    i,
                    first_address + i,
                    gpu,
                    rootfs,
                    base / "pods",
                    public_key,
                    logs,
                    base / "standins",
                )
            )
            state["pods"] = [pod.as_dict() for pod in pods]
            _save_state(base, state)
        state["hub"] = start_hub(
            base, logs, file_size, sizes or {}, hub_token, gated or [], offer_xet
        )
        _save_state(base, state)
        state["s3"] = start_s3(base, logs)
        _save_state(base, state)
        state["git"] = _start_git(base, logs)
        _save_state(base, state)
        for pod in pods:
            wait_for_ssh(pod)
    except BaseException:
        down(base)
        raise
    return state


def add_pod(gpu: str, rootfs: Path, address_octet: int, base: Path | None = None) -> dict[str, Any]:
    """One more pod in a running sandbox, on another root filesystem (an image's, mounted)."""
    base = base or default_base()
    state = load_state(base)
    key = Path(state["ssh_key"])
    pod = start_pod(
        len(state["pods"]),
        address_octet,
        gpu,
        rootfs,
        base / "pods",
        key.with_suffix(".pub").read_text(),
        base / "logs",
        base / "standins",
    )
    state["pods"].append(pod.as_dict())
    _save_state(base, state)
    wait_for_ssh(pod)
    return pod.as_dict()


def remove_pod(name: str, base: Path | None = None) -> None:
    """Stop one pod and forget it (a pod on an image's filesystem, before the image goes)."""
    base = base or default_base()
    state = load_state(base)
    pods = [p for p in state["pods"] if p["name"] == name]
    if not pods:
        raise KeyError(f"no pod named {name!r}")
    stop_pod(Pod(**pods[0]))
    state["pods"] = [p for p in state["pods"] if p["name"] != name]
    _save_state(base, state)


def start_hub(
    base: Path,
    logs: Path,
    file_size: int,
    sizes: dict[str, int],
    token: str | None,
    gated: list[str],
    offer_xet: bool = False,
) -> dict[str, Any]:
    port = _free_port()
    argv = [
        sys.executable,
        "-m",
        "sandbox.hub",
        "--port",
        str(port),
        "--dir",
        str(base / "hub"),
        "--file-size",
        str(file_size),
        "--sizes",
        json.dumps(sizes),
    ]
    for repo in gated:
        argv += ["--gated", repo]
    if offer_xet:
        argv.append("--xet")
    # Tokens travel in the environment, not on the command line. CivitAI's stand-in always
    # has one: most of its downloads need it, as on civitai.com.
    civitai_token = secrets.token_hex(16)
    env = {**os.environ, "PODFORGE_CIVITAI_TOKEN": civitai_token}
    if token:
        env["PODFORGE_HUB_TOKEN"] = token
    pid = _spawn(argv, logs / "hub.log", env)
    # Generating large sandbox files takes a while before the port opens.
    _wait_for_port(port, pid, "the hub", logs / "hub.log", timeout=600)
    return {
        "url": f"http://127.0.0.1:{port}",
        "port": port,
        "pid": pid,
        "gated": gated,
        "civitai_token": civitai_token,
    }


def start_s3(base: Path, logs: Path) -> dict[str, Any]:
    port = _free_port()
    data = base / "s3"
    (data / S3_BUCKET).mkdir(parents=True, exist_ok=True)
    access_key = "podforge-sandbox"
    secret_key = secrets.token_hex(16)
    rclone = str(Path(sys.executable).parent / "rclone")
    # In the environment, not on the command line; rclone reads list flags as CSV.
    env = dict(
        os.environ, RCLONE_AUTH_KEY=f'"{access_key},{secret_key}"', RCLONE_CONFIG="/dev/null"
    )
    argv = [rclone, "serve", "s3", "--addr", f"127.0.0.1:{port}", str(data)]
    pid = _spawn(argv, logs / "s3.log", env)
    _wait_for_port(port, pid, "the S3 server", logs / "s3.log")
    # Clients talk to the gate, which refuses what R2 refuses (sandbox/s3gate.py).
    gate_port = _free_port()
    gate_argv = [
        sys.executable,
        "-m",
        "sandbox.s3gate",
        "--port",
        str(gate_port),
        "--upstream",
        f"127.0.0.1:{port}",
        "--data",
        str(data),
    ]
    gate_pid = _spawn(gate_argv, logs / "s3gate.log")
    _wait_for_port(gate_port, gate_pid, "the S3 gate", logs / "s3gate.log")
    return {
        "url": f"http://127.0.0.1:{gate_port}",
        "rclone_url": f"http://127.0.0.1:{port}",
        "port": gate_port,
        "pid": pid,
        "gate_pid": gate_pid,
        "bucket": S3_BUCKET,
        "access_key": access_key,
        "secret_key": secret_key,
        "dir": str(data),
    }


def _start_git(base: Path, logs: Path) -> dict[str, Any]:
    """git daemon serving the repositories at git://127.0.0.1:PORT/<name>.git."""
    repos = build_repos(base / "git")
    port = _free_port()
    argv = [
        "git",
        "daemon",
        "--reuseaddr",
        "--export-all",
        f"--base-path={base / 'git'}",
        "--listen=127.0.0.1",
        f"--port={port}",
        str(base / "git"),
    ]
    pid = _spawn(argv, logs / "git.log")
    _wait_for_port(port, pid, "git daemon", logs / "git.log")
    url = f"git://127.0.0.1:{port}"
    return {
        "url": url,
        "port": port,
        "pid": pid,
        "repos": {
            name: {"url": f"{url}/{name}.git", **{k: v for k, v in repo.items() if k != "path"}}
            for name, repo in repos.items()
        },
    }


def boot_models_wait() -> str:
    """The command awaiting the model fetch a pod's boot phase (start.sh) started, through
    the link start.sh follows too; exits with the fetch's code."""
    settings = Settings()
    return f"{settings.tools_dir}/bin/podforge job wait {boot_fetch(settings)}"


def ssh_argv(state: dict[str, Any], pod: dict[str, Any]) -> list[str]:
    """ssh to a pod as root with the sandbox's key (pods share one throwaway host key)."""
    return [
        "ssh",
        "-q",
        "-i",
        state["ssh_key"],
        "-p",
        str(pod["port"]),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        f"root@{pod['address']}",
    ]


def pod_hosts(state: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The pods as pyinfra hosts: (address, host data: the sandbox's settings and the pod's
    connection; nothing of the sandbox is in group_data, which production reads)."""
    return [
        (
            pod["address"],
            {
                **sandbox_settings(state),
                "ssh_port": pod["port"],
                "ssh_user": "root",
                "ssh_key": state["ssh_key"],
                # Sandbox pods share one throwaway host key; nothing to pin.
                "ssh_known_hosts_file": "/dev/null",
                "ssh_strict_host_key_checking": "no",
                "pod_name": pod["name"],
                "gpu_profile": pod["gpu"],
                # Pods share this machine's network: each serves on its own address, nginx
                # on ComfyUI's port and ComfyUI behind it on its private one (port + 10000).
                "comfyui_listen": pod["address"],
                "comfyui_private_listen": pod["address"],
            },
        )
        for pod in state["pods"]
    ]


def stop_process(pid: int) -> None:
    if not is_alive(pid):
        return
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while is_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if is_alive(pid):
        os.killpg(pid, signal.SIGKILL)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass  # started by another process: it is gone, which is all we need


def stop_one_pod(name: str, base: Path | None = None) -> None:
    """Kill one pod (fleet tests: a pod that dies mid-run); it stays in the state as dead."""
    base = base or default_base()
    state = load_state(base)
    pods = {p["name"]: p for p in state["pods"]}
    if name not in pods:
        raise KeyError(f"no pod named {name!r}; the sandbox has {', '.join(sorted(pods))}")
    pod = pods[name]
    os.kill(pod["pid"], signal.SIGKILL)


def restart_pod(name: str, base: Path | None = None) -> dict[str, Any]:
    """Start a stopped pod again on its own files (a pod reboot); wait for its SSH."""
    base = base or default_base()
    state = load_state(base)
    index = next((i for i, p in enumerate(state["pods"]) if p["name"] == name), None)
    if index is None:
        known = ", ".join(p["name"] for p in state["pods"])
        raise KeyError(f"no pod named {name!r}; the sandbox has {known}")
    pod = Pod(**state["pods"][index])
    if is_alive(pod.pid):
        raise RuntimeError(f"{name} is running; stop it first (stop-pod)")
    reap(pod.pid)
    # The dead namespace's mounts go with its last process: wait until the root is free.
    deadline = time.monotonic() + 10
    while is_mounted(pod.root) and time.monotonic() < deadline:
        time.sleep(0.05)
    restarted = launch(pod, Path(pod.lower) if pod.lower else ensure_rootfs(), base / "logs")
    state["pods"][index] = restarted.as_dict()
    _save_state(base, state)
    wait_for_ssh(restarted)
    return restarted.as_dict()


def down(base: Path | None = None) -> None:
    """Stop everything the state names, by PID, and remove the sandbox's files."""
    base = base or default_base()
    path = state_path(base)
    if not path.exists():
        return
    state = json.loads(path.read_text())
    for pod in state.get("pods", []):
        stop_pod(Pod(**pod))
    for service in ("hub", "s3", "git"):
        if service in state:
            stop_process(state[service]["pid"])
    if "gate_pid" in state.get("s3", {}):
        stop_process(state["s3"]["gate_pid"])
    for sub in ("pods", "hub", "s3", "git", "standins", "logs"):
        target = base / sub
        if target.exists():
            subprocess.run(["rm", "-rf", "--one-file-system", str(target)], check=True)
    path.unlink()


def status(base: Path | None = None) -> str:
    base = base or default_base()
    state = load_state(base)
    lines = []
    for pod in state["pods"]:
        alive = "up" if is_alive(pod["pid"]) else "DOWN"
        lines.append(
            f"{pod['name']}  root@{pod['address']}:{pod['port']}  gpu={pod['gpu']}  {alive}"
        )
    for service in ("hub", "s3", "git"):
        if service in state:
            alive = "up" if is_alive(state[service]["pid"]) else "DOWN"
            lines.append(f"{service}  {state[service]['url']}  {alive}")
    return "\n".join(lines)
