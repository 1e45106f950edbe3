"""One pod vs ten: fresh deploy and no-op rerun, in the same run. Prints figures and ratios.

    .venv/bin/python -m bench.fleet [--file-mib 1] [--throttle-kib 16] [--rounds 3]

One sandbox of 11 pods: pod 0 is "the fleet of one", pods 1-10 the fleet of ten, deployed
through fleet.rollout's runner (one pyinfra run each, as `python -m fleet rollout` does).
The hub serves every download at a per-connection rate (plain HTTP, Xet off), so pods wait
on the network as real pods do (20-40 GB per pod at ~100 MB/s), not only on this machine's
2 cores, which all eleven pods share (the ~150-package stack install is CPU-bound here).
Targets: 10-pod no-op <= 1.5x the 1-pod no-op; 10-pod fresh <= 2x the 1-pod fresh.
Controller CPU: this process's user+system seconds (pyinfra, facts, the plan), per pod.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
import urllib.request

from bench.sandbox import bench_sandbox
from fleet.report import RunCollector
from fleet.rollout import load_inventory, run_deploy
from podforge.rollout import PodRun

GPUS = ["rtx-4090", "h100", "rtx-4080-super", "2x-a40", "rtx-3060"]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _deploy(names: list[str]) -> tuple[float, float, list[PodRun]]:
    """(wall s, controller CPU s, rows) of one pyinfra run on the named pods."""
    inventory = load_inventory("inventories/sandbox.py")
    hosts = [h for h in inventory if h.data.get("pod_name") in names]
    collector = RunCollector()
    began, cpu = time.monotonic(), _cpu()
    try:
        state, stopped = run_deploy(hosts, collector)
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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet")
    parser.add_argument("--file-mib", type=float, default=1.0, help="size of each model file")
    parser.add_argument("--throttle-kib", type=int, default=16, help="KiB/s per connection")
    parser.add_argument("--rounds", type=int, default=3, help="no-op reruns per fleet size")
    args = parser.parse_args()
    gpus = [GPUS[i % len(GPUS)] for i in range(11)]
    size = int(args.file_mib * 2**20)
    with bench_sandbox("fleet", gpus, 100, file_size=size, offer_xet=False) as state:
        hub = state["hub"]["url"]
        _control(hub, "faults", {"throttle_bps": args.throttle_kib * 1024})
        names = [pod["name"] for pod in state["pods"]]
        one, ten = names[:1], names[1:]
        print(f"hub: {args.file_mib:g} MiB files at {args.throttle_kib} KiB/s per connection")
        figures = {}
        for label, pods in (("1 pod", one), ("10 pods", ten)):
            wall, cpu, runs = _deploy(pods)
            gb = sum(run.gb_fetched for run in runs)
            figures[label, "fresh"] = wall
            print(
                f"{label}: fresh deploy {wall:.1f} s, {gb * 1000:.1f} MB fetched, "
                f"controller CPU {cpu / len(pods):.2f} s per pod"
            )
        for label, pods in (("1 pod", one), ("10 pods", ten)):
            walls, cpus = [], []
            for _ in range(args.rounds):
                wall, cpu, runs = _deploy(pods)
                assert all(run.changed == 0 for run in runs), runs
                walls.append(wall)
                cpus.append(cpu / len(pods))
            figures[label, "noop"] = statistics.median(walls)
            print(
                f"{label}: no-op deploy {figures[label, 'noop']:.2f} s (median of "
                f"{args.rounds}), controller CPU {statistics.median(cpus):.2f} s per pod "
                f"(all pods share this machine's {os.cpu_count()} cores)"
            )
        for kind, target in (("fresh", 2.0), ("noop", 1.5)):
            ratio = figures["10 pods", kind] / figures["1 pod", kind]
            print(f"10 pods / 1 pod, {kind}: {ratio:.2f}x (target <= {target}x)")


if __name__ == "__main__":
    main()
