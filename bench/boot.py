"""The boot phase of start.sh on an already prepared pod: wall time, median of N. Prints figures.

    .venv/bin/python -m bench.boot [--rounds 5]

One sandbox pod is deployed fully over SSH; then, on the pod itself, the boot phase runs as
start.sh runs it (`pyinfra @local deploy.py --data phase=boot` from the deploy bundle), timed
inside the pod. Target: <= 5 s on this machine.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess

from bench.sandbox import bench_sandbox
from sandbox import control
from sandbox.converge import converge

BOOT = (
    "cd /opt/podforge/deploy && s=$(date +%s.%N)"
    " && PYINFRA_YES=1 /opt/podforge/deployer/bin/pyinfra @local deploy.py --data phase=boot"
    " > /tmp/boot.log 2>&1 && echo $s $(date +%s.%N)"
)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.boot")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with bench_sandbox("boot", ["rtx-4090"], first_address=95) as state:
        assert all(not r.failed for r in converge().values())
        pod = state["pods"][0]
        ssh = control.ssh_argv(state, pod)
        walls = []
        for _ in range(args.rounds):
            out = subprocess.run([*ssh, BOOT], capture_output=True, text=True, check=True)
            began, ended = (float(v) for v in out.stdout.split())
            walls.append(ended - began)
        log = subprocess.run([*ssh, "cat /tmp/boot.log"], capture_output=True, text=True)
        total = next(line for line in log.stdout.splitlines() if "Grand total" in line)
        print(
            f"no-op boot phase on a prepared pod: median {statistics.median(walls):.2f} s "
            f"of {args.rounds} (min {min(walls):.2f}, max {max(walls):.2f}); target <= 5 s"
        )
        print(f"its results: {' '.join(total.split())}")


if __name__ == "__main__":
    main()
