"""How long a fresh pod takes to serve, against the time its bytes alone take. Prints figures.

    .venv/bin/python -m bench.serve [--file-mb 64] [--link-mbps 40]

One fresh sandbox pod (an RTX 4090's plan: six model files of ``--file-mb`` each) is
deployed while all it downloads shares one link capped at ``--link-mbps`` (the hub's
``link_bps``): the model files, and its stack's wheels (~3.5 GB), which its pip and uv fetch
from PyPI through the hub's tunnel (``HTTPS_PROXY`` on the pod, its uv cache emptied first).
Printed: the time until ComfyUI first answers, the time until the deploy is done (verify
passed: serving), the bytes-only time (all the bytes at the cap) and the ratio, the pod's
timeline, and the same steps one after another (the order before the fetch ran in the
background: each step's own seconds, the fetch's at its transfer time), as the "before".

``--warm-stack`` keeps the sandbox's warm uv cache instead (the stack hardlinked, nothing
downloaded for it: only the models cross the link).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.sandbox import bench_sandbox
from podforge.core.auth import private_port
from podforge.core.config import Settings
from podforge.core.timeline import Timeline
from sandbox.control import ssh_argv

REPO = Path(__file__).resolve().parent.parent
MB = 10**6
DEPLOY = (
    "import sys\n"
    "from sandbox.converge import converge\n"
    "sys.exit(1 if any(result.failed for result in converge().values()) else 0)\n"
)


def cap_link(state: dict[str, Any], bytes_per_second: int) -> None:
    request = urllib.request.Request(
        f"{state['hub']['url']}/_control/faults",
        data=json.dumps({"link_bps": bytes_per_second}).encode(),
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request).read()


def tunneled(state: dict[str, Any]) -> int:
    """The bytes that came down the hub's tunnels (the pod's PyPI downloads)."""
    with urllib.request.urlopen(f"{state['hub']['url']}/_control/link") as answer:
        return int(json.load(answer)["tunneled"])


def cold_stack(state: dict[str, Any], pod: dict[str, Any]) -> None:
    """The pod without the sandbox's warm uv cache, its installers behind the hub's link:
    every SSH session gets HTTPS_PROXY (pam_env reads /etc/environment)."""
    subprocess.run(
        [
            *ssh_argv(state, pod),
            f"rm -rf /workspace/.cache/uv && echo HTTPS_PROXY={state['hub']['url']}"
            " >> /etc/environment",
        ],
        check=True,
    )


def answers(address: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}:{port}/system_stats", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.serve")
    parser.add_argument("--file-mb", type=int, default=64, help="each model file's size")
    parser.add_argument("--link-mbps", type=float, default=40.0, help="the link, MB/s")
    parser.add_argument(
        "--warm-stack", action="store_true", help="the stack from the warm uv cache, uncapped"
    )
    args = parser.parse_args()
    cap = int(args.link_mbps * MB)
    port = private_port(Settings().comfyui_port)
    with bench_sandbox(
        "serve", ["rtx-4090"], first_address=95, file_size=args.file_mb * MB, offer_xet=False
    ) as state:
        (pod,) = state["pods"]
        if not args.warm_stack:
            cold_stack(state, pod)
        cap_link(state, cap)
        log = Path(state["base"]) / "serve-deploy.log"
        began = time.monotonic()
        first_answer = None
        with log.open("wb") as out:
            deploy = subprocess.Popen(
                [sys.executable, "-c", DEPLOY], cwd=REPO, stdout=out, stderr=subprocess.STDOUT
            )
            while deploy.poll() is None:
                if first_answer is None and answers(pod["address"], port):
                    first_answer = time.monotonic() - began
                time.sleep(0.5)
        serving = time.monotonic() - began
        if deploy.returncode != 0:
            sys.exit(f"bench.serve: the deploy failed; its output: {log}")
        kept = subprocess.run(
            [*ssh_argv(state, pod), "cat /opt/podforge/timeline.json"],
            check=True,
            capture_output=True,
            text=True,
        )
        timeline = Timeline.from_json(json.loads(kept.stdout))
        (models,) = [step for step in timeline.steps if step.name == "Models"]
        if not models.bytes:
            sys.exit("bench.serve: the timeline has no model bytes: nothing was fetched?")
        stack_bytes = tunneled(state)
        if not args.warm_stack and stack_bytes < 10**9:
            sys.exit(f"bench.serve: only {stack_bytes} bytes came through the tunnel: no stack?")
        bytes_only = (models.bytes + stack_bytes) / cap
        one_by_one = sum(
            (step.transfer_seconds or step.seconds) if step is models else step.seconds
            for step in timeline.steps
        )
        print("\n".join(timeline.lines()))
        print(f"link: {args.link_mbps:.1f} MB/s shared by every download of the pod")
        stack = "from the warm uv cache" if args.warm_stack else f"{stack_bytes / MB:.0f} MB"
        print(
            f"models: {models.bytes / MB:.0f} MB; stack: {stack};"
            f" all the bytes alone on the link: {bytes_only:.1f} s"
        )
        answered = "never while it ran" if first_answer is None else f"{first_answer:.1f} s"
        print(f"ComfyUI first answered: {answered} after the deploy began")
        print(
            f"serving (the deploy done, verify passed): {serving:.1f} s;"
            f" {serving / bytes_only:.2f}x the bytes-only time"
        )
        print(
            f"the same steps one after another (before): {one_by_one:.1f} s of operations,"
            f" {one_by_one / bytes_only:.2f}x; now {timeline.seconds:.1f} s,"
            f" {timeline.seconds / bytes_only:.2f}x (target <= 1.3x)"
        )


if __name__ == "__main__":
    main()
