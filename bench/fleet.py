"""One pod vs ten: fresh deploy and no-op rerun, in the same run. Prints figures and ratios.

    .venv/bin/python -m bench.fleet [--file-mib 2] [--throttle-kib 8] [--rtt-ms 50] [--rounds 9]

One sandbox of 11 pods: pod 0 is "the fleet of one", pods 1-10 the fleet of ten, deployed
through fleet.rollout's runner (one pyinfra run each, as `python -m fleet rollout` does).
The network is made network-like, so pods wait on it as real pods do, not only on this
machine's 2 cores, which the controller and all eleven pods share:
- the hub serves every download at a per-connection rate (plain HTTP, Xet off): real pods
  fetch 20-40 GB each at ~100 MB/s, minutes of it, as 2 MiB files at 8 KiB/s are here;
- SSH goes through sandbox.latency, which delays every byte by half of ``--rtt-ms`` each way:
  a laptop reaches a RunPod datacenter in tens of milliseconds, a sandbox pod in microseconds.
The no-op is also measured without the delay (SSH straight over loopback), where 10 pods are
bound by the 2 cores alone; both ratios are printed. Beside each, the floor: a deploy of as
many remote commands as podforge's no-op runs, each `true` (connect, the same round trips,
sshd and a shell per command, no podforge), so the figures say what podforge itself adds.
The no-op and floor rounds of both fleets take turns, so a drift in this machine's load
(the fresh fleet's services settling, say) falls on all of them alike.
Targets: 10-pod no-op <= 1.5x the 1-pod no-op; 10-pod fresh <= 2x the 1-pod fresh.
Controller CPU: this process's user+system seconds (pyinfra, facts, the plan), per pod.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.counting import counted_commands
from bench.sandbox import bench_sandbox
from fleet.report import RunCollector
from fleet.rollout import REPO, load_inventory, run_deploy
from fleet.runs import PodRun

GPUS = ["rtx-4090", "h100", "rtx-4080-super", "2x-a40", "rtx-3060"]
RELAY_PORT = 2223  # sandbox.latency listens here on each pod's address


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


FLOOR_DEPLOY = """\
from pyinfra import host
from pyinfra.facts.server import Command

for number in range({commands}):
    host.get_fact(Command, f"true {{number}}")
"""


def _deploy(
    names: list[str], ssh_port: int | None, cwd: Path = REPO
) -> tuple[float, float, list[PodRun]]:
    """(wall s, controller CPU s, rows) of one pyinfra run of cwd/deploy.py (podforge's by
    default) on the named pods; ``ssh_port``: the relay's port instead of the pods' own."""
    inventory = load_inventory(
        "inventories/sandbox.py", {"ssh_port": ssh_port} if ssh_port is not None else None
    )
    hosts = [h for h in inventory if h.data.get("pod_name") in names]
    collector = RunCollector()
    began, cpu = time.monotonic(), _cpu()
    try:
        state, stopped = run_deploy(hosts, collector, cwd)
    finally:
        collector.close()
    wall, spent = time.monotonic() - began, _cpu() - cpu
    runs = collector.runs(state, stopped)
    bad = [run for run in runs if run.status != "ok"]
    assert not bad, bad
    return wall, spent, runs


def _control(hub: str, what: str, body: dict[str, object]) -> None:
    request = urllib.request.Request(
        f"{hub}/_control/{what}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request).read()


@contextmanager
def latency_relay(pods: list[dict[str, Any]], rtt_ms: float) -> Iterator[int]:
    """sandbox.latency in front of every pod's sshd, until the block ends; its port."""
    routes = [f"{pod['address']}:{RELAY_PORT}={pod['address']}:{pod['port']}" for pod in pods]
    with tempfile.NamedTemporaryFile(prefix="podforge-relay-", suffix=".log") as log:
        relay = subprocess.Popen(
            [sys.executable, "-m", "sandbox.latency", "--one-way-ms", str(rtt_ms / 2), *routes],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parent.parent,
        )
        try:
            deadline = time.monotonic() + 10
            while b"ready" not in Path(log.name).read_bytes():
                if relay.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"sandbox.latency did not start: {Path(log.name).read_text()}"
                    )
                time.sleep(0.05)
            yield RELAY_PORT
        finally:
            relay.send_signal(signal.SIGTERM)
            relay.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet")
    parser.add_argument("--file-mib", type=float, default=2.0, help="size of each model file")
    parser.add_argument("--throttle-kib", type=int, default=8, help="KiB/s per connection")
    parser.add_argument("--rtt-ms", type=float, default=50, help="SSH round trip to each pod")
    parser.add_argument("--rounds", type=int, default=9, help="no-op reruns per fleet size")
    args = parser.parse_args()
    gpus = [GPUS[i % len(GPUS)] for i in range(11)]
    size = int(args.file_mib * 2**20)
    with bench_sandbox("fleet", gpus, 100, file_size=size, offer_xet=False) as state:
        hub = state["hub"]["url"]
        _control(hub, "faults", {"throttle_bps": args.throttle_kib * 1024})
        names = [pod["name"] for pod in state["pods"]]
        fleets = (("1 pod", names[:1]), ("10 pods", names[1:]))
        print(
            f"hub: {args.file_mib:g} MiB files at {args.throttle_kib} KiB/s per connection; "
            f"SSH round trip {args.rtt_ms:g} ms"
        )
        figures: dict[tuple[str, str], float] = {}
        with latency_relay(state["pods"], args.rtt_ms) as relay_port:
            for label, pods in fleets:
                wall, cpu, runs = _deploy(pods, relay_port)
                gb = sum(run.gb_fetched for run in runs)
                figures[label, "fresh"] = wall
                print(
                    f"{label}: fresh deploy {wall:.1f} s, {gb * 1000:.1f} MB fetched, "
                    f"controller CPU {cpu / len(pods):.2f} s per pod"
                )
            with counted_commands() as counted:
                _, _, runs = _deploy(names[:1], relay_port)
            assert runs[0].changed == 0, runs  # the floor copies a no-op's command count
            with tempfile.TemporaryDirectory(prefix="podforge-floor-") as floor:
                Path(floor, "deploy.py").write_text(FLOOR_DEPLOY.format(commands=counted["n"]))
                for port in (relay_port, None):
                    figures |= _noops(fleets, port, args.rounds, Path(floor), counted["n"])
        for kind, target in (("fresh", 2.0), ("noop", 1.5), ("noop-loopback", 1.5)):
            ratio = figures["10 pods", kind] / figures["1 pod", kind]
            print(f"10 pods / 1 pod, {kind}: {ratio:.2f}x (target <= {target}x)")
        for kind in ("floor", "floor-loopback"):
            ratio = figures["10 pods", kind] / figures["1 pod", kind]
            print(f"10 pods / 1 pod, {kind}: {ratio:.2f}x (no podforge: the SSH floor here)")


def _noops(
    fleets: tuple[tuple[str, list[str]], ...],
    ssh_port: int | None,
    rounds: int,
    floor: Path,
    commands: int,
) -> dict[tuple[str, str], float]:
    """Median wall time of ``rounds`` no-op deploys of each fleet, and of as many floors
    (``floor``: that dir's deploy.py of ``commands`` empty commands instead of podforge's).
    Rounds take turns (1 pod, 10 pods, each no-op then floor), so a drift in this machine's
    load falls on all of them alike. Prints each with the controller's CPU, and the spread of
    the rounds' own 10 pods / 1 pod ratios."""
    suffix = "" if ssh_port is not None else "-loopback"
    kinds = ((f"noop{suffix}", REPO), (f"floor{suffix}", floor))
    walls: dict[tuple[str, str], list[float]] = {}
    cpus: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for label, pods in fleets:
            for kind, cwd in kinds:
                wall, cpu, runs = _deploy(pods, ssh_port, cwd)
                assert all(run.changed == 0 for run in runs), runs
                walls.setdefault((label, kind), []).append(wall)
                cpus.setdefault((label, kind), []).append(cpu / len(pods))
    path = "through the relay" if ssh_port is not None else "over loopback, no delay"
    for (label, kind), times in walls.items():
        what = (
            f"floor ({commands} x `true`, no podforge)"
            if kind.startswith("floor")
            else "no-op deploy"
        )
        print(
            f"{label}: {what} {statistics.median(times):.2f} s ({path}, median of {rounds}), "
            f"controller CPU {statistics.median(cpus[label, kind]):.2f} s per pod "
            f"(all pods share this machine's {os.cpu_count()} cores)"
        )
    (one, _), (ten, _) = fleets
    for kind, _ in kinds:
        ratios = [t / o for o, t in zip(walls[one, kind], walls[ten, kind], strict=True)]
        print(f"{kind}: each round's 10 pods / 1 pod: {min(ratios):.2f}-{max(ratios):.2f}x")
    return {key: statistics.median(times) for key, times in walls.items()}


if __name__ == "__main__":
    main()
