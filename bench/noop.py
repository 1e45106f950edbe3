"""No-op deploy of a provisioned sandbox pod: wall time and remote commands. Prints figures.

    .venv/bin/python -m bench.noop [--rounds 5]

One pod is deployed fully (ComfyUI, its nodes, the stack lock, models), then deployed again
and again: through pyinfra's CLI as a user runs it (wall time, median), beside pyinfra's own
floor (`exec -- true`: connecting, facts, one command), and through its API with every
remote command counted. Target: <= 3 s, within 1 s of the floor, and <= 40 commands.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

from bench.counting import counted_commands
from bench.sandbox import bench_sandbox
from podforge.core.timeline import Timeline
from sandbox.control import ssh_argv
from sandbox.converge import converge

REPO = Path(__file__).resolve().parent.parent
BEFORE = (4.6, 58)  # seconds, commands: the no-op before this work (issue #8)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.noop")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with bench_sandbox("noop", ["rtx-4090"], first_address=90) as state:
        began = time.monotonic()
        first = converge()
        print(f"full deploy of a fresh pod: {time.monotonic() - began:.1f} s")
        assert all(not r.failed for r in first.values()), first
        (pod,) = state["pods"]
        kept = subprocess.run(
            [*ssh_argv(state, pod), "cat /opt/podforge/timeline.json"],
            check=True,
            capture_output=True,
            text=True,
        )
        print("\n".join(Timeline.from_json(json.loads(kept.stdout)).lines()))
        pyinfra = [str(REPO / ".venv/bin/pyinfra"), "-y", "inventories/sandbox.py"]
        walls, floors = [], []
        for _ in range(args.rounds):  # taking turns, so drift falls on both alike
            began = time.monotonic()
            subprocess.run([*pyinfra, "deploy.py"], cwd=REPO, check=True, capture_output=True)
            walls.append(time.monotonic() - began)
            began = time.monotonic()
            subprocess.run(
                [*pyinfra, "exec", "--", "true"], cwd=REPO, check=True, capture_output=True
            )
            floors.append(time.monotonic() - began)
        with counted_commands() as counted:
            results = converge()
        changed = [name for r in results.values() for name in r.changed]
        wall, floor = statistics.median(walls), statistics.median(floors)
        print(
            f"no-op deploy (pyinfra CLI, median of {args.rounds}): {wall:.2f} s "
            f"(before: {BEFORE[0]} s, ratio {wall / BEFORE[0]:.2f}; target <= 3 s)"
        )
        print(
            f"floor, `pyinfra inventories/sandbox.py exec -- true`: {floor:.2f} s; the no-op is"
            f" {wall - floor:.2f} s above it (target: within 1 s)"
        )
        print(
            f"remote commands of a no-op deploy: {counted['n']} "
            f"(before: {BEFORE[1]}; target <= 40); changes: {len(changed)} {changed}"
        )


if __name__ == "__main__":
    main()
