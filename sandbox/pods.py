"""Sandbox pods: one overlay root, PID/UTS/mount namespaces and sshd on 127.0.0.N each.

Like a RunPod pod, PID 1 is not systemd (it is tini) and only key-based root SSH works.
A pod is started by ``unshare ... --kill-child`` and stopped by SIGKILL to that PID: the
namespace's PID 1 dies, everything in it dies, and its mounts go with the namespace.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from sandbox.wheels import POD_RELEASES, seed_uv_cache

REPO = Path(__file__).resolve().parent.parent
GPU_PROFILES = REPO / "sandbox" / "gpus"
FAKE_NVIDIA_SMI = REPO / "sandbox" / "fake-nvidia-smi"
SSH_PORT = 2222
NO_GPU = "none"  # profile name for a pod without nvidia-smi at all

SSHD_CONFIG = """\
# podforge sandbox pod: key-only root login
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
"""

LAUNCH = """\
set -eu
mount -t overlay overlay -o "lowerdir=$LOWER,upperdir=$UPPER,workdir=$WORK" "$ROOT"
mount -t proc proc "$ROOT/proc"
mount --rbind /sys "$ROOT/sys"
mount --rbind /dev "$ROOT/dev"
mount -t tmpfs tmpfs "$ROOT/tmp"
mount -t tmpfs tmpfs "$ROOT/run"
mkdir -p "$ROOT/run/sshd"
hostname "$POD_NAME"
exec chroot "$ROOT" /usr/bin/tini -s -- /usr/sbin/sshd -D -e \
    -o "ListenAddress=$ADDRESS" -o "Port=$PORT"
"""


@dataclass
class Pod:
    name: str
    address: str
    port: int
    gpu: str
    pid: int
    dir: str
    # The pod's read-only lower filesystem; None: the sandbox rootfs (an image's otherwise).
    lower: str | None = None

    @property
    def root(self) -> Path:
        return Path(self.dir) / "root"

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def start_pod(
    index: int,
    address_octet: int,
    gpu: str,
    rootfs: Path,
    base: Path,
    public_key: str,
    log_dir: Path,
    standins: Path,
) -> Pod:
    """Start pod number ``index`` on 127.0.0.{address_octet} with a GPU profile."""
    if gpu != NO_GPU and not (GPU_PROFILES / gpu).is_dir():
        known = ", ".join(sorted(p.name for p in GPU_PROFILES.iterdir()))
        raise ValueError(f"unknown GPU profile {gpu!r}; known: {known}, {NO_GPU}")
    name = f"pod{index + 1}"
    pod_dir = base / name
    if pod_dir.exists():
        raise RuntimeError(f"{pod_dir} exists: stop the old sandbox first (python -m sandbox down)")
    for sub in ("upper", "work", "root"):
        (pod_dir / sub).mkdir(parents=True)
    _prepare_upper(pod_dir / "upper", name, gpu, public_key, standins)
    pod = Pod(name, f"127.0.0.{address_octet}", SSH_PORT, gpu, 0, str(pod_dir), str(rootfs))
    return launch(pod, rootfs, log_dir)


def launch(pod: Pod, rootfs: Path, log_dir: Path) -> Pod:
    """Start (or restart, like a reboot: the pod's own files stay) the pod's namespaces."""
    pod_dir = Path(pod.dir)
    log = open(log_dir / f"{pod.name}.log", "ab")  # noqa: SIM115 - handed to the child
    process = subprocess.Popen(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--uts",
            "--pid",
            "--fork",
            "--kill-child",
            "sh",
            "-c",
            LAUNCH,
        ],
        env={
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "LOWER": str(rootfs),
            "UPPER": str(pod_dir / "upper"),
            "WORK": str(pod_dir / "work"),
            "ROOT": str(pod_dir / "root"),
            "POD_NAME": pod.name,
            "ADDRESS": pod.address,
            "PORT": str(pod.port),
        },
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    return Pod(pod.name, pod.address, pod.port, pod.gpu, process.pid, pod.dir, str(rootfs))


def _prepare_upper(upper: Path, name: str, gpu: str, public_key: str, standins: Path) -> None:
    ssh_dir = upper / "root" / ".ssh"
    ssh_dir.mkdir(parents=True, mode=0o700)
    (ssh_dir / "authorized_keys").write_text(public_key)
    (ssh_dir / "authorized_keys").chmod(0o600)
    config_dir = upper / "etc" / "ssh" / "sshd_config.d"
    config_dir.mkdir(parents=True)
    (config_dir / "podforge-sandbox.conf").write_text(SSHD_CONFIG)
    (upper / "etc" / "hostname").write_text(name + "\n")
    shutil.copy2("/etc/resolv.conf", upper / "etc" / "resolv.conf")
    (upper / "workspace").mkdir()
    seed_uv_cache(upper)
    # flash-attn's stand-in release wheel (sandbox/wheels.py).
    shutil.copytree(standins / "releases", upper / POD_RELEASES.lstrip("/"))
    if gpu != NO_GPU:
        bin_dir = upper / "usr" / "local" / "bin"
        bin_dir.mkdir(parents=True)
        shutil.copy2(FAKE_NVIDIA_SMI, bin_dir / "nvidia-smi")
        shutil.copytree(GPU_PROFILES / gpu, upper / "etc" / "podforge-fake-gpu")


def wait_for_ssh(pod: Pod, timeout: float = 20.0) -> None:
    """Until the pod's sshd answers with its banner; a dead launcher fails at once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(pod.pid):
            raise RuntimeError(f"{pod.name} exited during start; see {pod.dir}/../logs")
        try:
            with socket.create_connection((pod.address, pod.port), timeout=1) as conn:
                if conn.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{pod.name} did not answer SSH on {pod.address}:{pod.port}")


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ", 1)[1][0] != "Z"


def stop_pod(pod: Pod) -> None:
    """SIGKILL the launcher's process group (the pod's PID 1 and all in it follow), wait,
    remove its files."""
    # The group, not the launcher alone: unshare's --kill-child arms itself in the child
    # after the fork, so a pod stopped right after its start (a failed `up`) could outlive
    # its launcher. The launcher leads its own session: its pid is the group's id.
    with contextlib.suppress(ProcessLookupError):  # the whole group is gone already
        os.killpg(pod.pid, signal.SIGKILL)
    reap(pod.pid)
    deadline = time.monotonic() + 10
    # The mount namespace goes away with its last process; only then is the dir free.
    while is_mounted(Path(pod.dir) / "root") and time.monotonic() < deadline:
        time.sleep(0.05)
    if Path(pod.dir).exists():
        # rm, not shutil.rmtree: a pod holds a 2 GB venv, and rmtree in this (gevent-patched,
        # under pytest) process was seen holding thousands of directory fds until EMFILE.
        subprocess.run(["rm", "-rf", "--one-file-system", pod.dir], check=True)


def reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        # Not our child (another process started it): poll until it is gone.
        while is_alive(pid):
            time.sleep(0.05)


def is_mounted(path: Path) -> bool:
    target = str(path)
    with open("/proc/self/mountinfo") as mounts:
        return any(line.split()[4] == target for line in mounts)
