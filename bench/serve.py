"""How long a fresh pod takes to serve, against the time its bytes alone take. Prints figures.

    .venv/bin/python -m bench.serve [--scale 8] [--link-mbps 40] [--warm-stack]

One fresh sandbox pod (an RTX 4090's plan: six model files, 36 GB for real, each served at
its real size / ``--scale``: 4.5 GB at 8, beside a 4.2 GB stack) is
deployed while all it downloads shares one link capped at ``--link-mbps`` (the hub's
``link_bps``): the model files, and its stack's wheels (~4.2 GB here), which its pip and uv fetch
from PyPI through the hub's tunnel (``HTTPS_PROXY`` on the pod, its uv cache emptied first).
Printed: the time until ComfyUI first answers, the time until the deploy is done (verify
passed: serving), the bytes-only time (all the bytes at the cap) and the ratio, the pod's
timeline, and the same steps one after another (the order before the fetch ran in the
background: each step's own seconds, the fetch's at its transfer time), as the "before".

``--warm-stack`` keeps the sandbox's warm uv cache instead (the stack hardlinked with its
bytecode, nothing downloaded or compiled for it: only the models cross the link).

``--boot``: the boot phase instead, as start.sh runs it in a container of the image
(docs/image.md), where the stack is in and only the models download: the pod is deployed
(uncapped, its stack from the warm cache), stopped, its model files removed, the link
capped, then start.sh runs. Printed: when supervisord started, when ComfyUI first answered
and when the last model file was in, against the models' bytes alone on the link.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.sandbox import bench_sandbox
from podforge.core.auth import private_port
from podforge.core.config import Settings
from podforge.core.gpu import PROBE_COMMAND, parse_probe
from podforge.core.plan import build_plan
from podforge.core.timeline import Timeline
from sandbox.control import boot_models_wait, ssh_argv
from sandbox.pods import FAKE_NVIDIA_SMI, GPU_PROFILES
from sandbox.settings import SANDBOX_FEATURES

REPO = Path(__file__).resolve().parent.parent
MB = 10**6
GPU = "rtx-4090"
DEPLOY = (
    "import logging, sys\n"
    "from sandbox.converge import converge\n"
    "logging.basicConfig(level=logging.WARNING)\n"
    "failed = [r for r in converge().values() if r.failed]\n"
    "for r in failed:\n"
    "    print(f'{r.name}: failed at {r.errors}', file=sys.stderr)\n"
    "sys.exit(1 if failed else 0)\n"
)


def cap_link(state: dict[str, Any], bytes_per_second: int) -> None:
    request = urllib.request.Request(
        f"{state['hub']['url']}/_control/faults",
        data=json.dumps({"link_bps": bytes_per_second}).encode(),
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request).read()


def planned_sizes(gpu: str, scale: int) -> dict[str, int]:
    """Each Hugging Face file the sandbox's plan fetches for ``gpu``: its real size / scale
    (the hub's sizes, by path), so the bench's bytes keep the real files' proportions."""
    with tempfile.TemporaryDirectory() as bin_dir:
        os.symlink(FAKE_NVIDIA_SMI, f"{bin_dir}/nvidia-smi")
        probe = subprocess.run(
            ["sh", "-c", PROBE_COMMAND],
            env={"PATH": f"{bin_dir}:/usr/bin:/bin", "PODFORGE_FAKE_GPU": str(GPU_PROFILES / gpu)},
            capture_output=True,
            text=True,
            check=True,
        )
    # The sandbox's features (its endpoints aside: they do not move the plan), with the
    # catalog's sizes, which the sandbox's hub does not serve (it leaves them off).
    settings = Settings(
        **{
            **SANDBOX_FEATURES,
            "r2_endpoint": "https://bench.invalid",
            "verify_catalog_sizes": True,
        }
    )
    plan = build_plan(settings, parse_probe(probe.stdout.splitlines()), (3, 11, 2), "x86_64")
    return {m.path: max(m.planned_bytes // scale, 1) for m in plan.models if m.path}


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
    parser.add_argument("--scale", type=int, default=8, help="model files at real size / N")
    parser.add_argument("--link-mbps", type=float, default=40.0, help="the link, MB/s")
    parser.add_argument(
        "--warm-stack", action="store_true", help="the stack from the warm uv cache, uncapped"
    )
    parser.add_argument(
        "--boot", action="store_true", help="the boot phase (start.sh): only the models download"
    )
    args = parser.parse_args()
    cap = int(args.link_mbps * MB)
    port = private_port(Settings().comfyui_port)
    sizes = planned_sizes(GPU, args.scale)
    with bench_sandbox(
        "serve", [GPU], first_address=95, file_size=MB, sizes=sizes, offer_xet=False
    ) as state:
        (pod,) = state["pods"]
        if args.boot:
            boot(state, pod, cap, sum(sizes.values()), port)
            return
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
            # The sandbox (and the log in it) goes with this run: its last lines say why.
            last = log.read_text(errors="replace").splitlines()[-40:]
            sys.exit("\n".join(["bench.serve: the deploy failed; its last lines:", *last]))
        kept = subprocess.run(
            [*ssh_argv(state, pod), "cat /opt/podforge/timeline.json"],
            check=True,
            capture_output=True,
            text=True,
        )
        timeline = Timeline.from_json(json.loads(kept.stdout))
        (models,) = [step for step in timeline.steps if step.name == "Models"]
        if models.bytes != sum(sizes.values()):
            sys.exit(f"bench.serve: {models.bytes} model bytes fetched, the plan's are {sizes}")
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


# On the pod: supervisord and its programs stopped, the model files gone (the container of
# an image starts without them), as a fresh container of the image meets its volume.
STOPPED_WITHOUT_MODELS = (
    "supervisorctl shutdown > /dev/null"
    " && for i in $(seq 300); do pgrep -x supervisord > /dev/null || break; sleep 0.1; done"
    " && /opt/podforge/tools/bin/python -c 'import json, os\n"
    'for model in json.load(open("/opt/podforge/manifest.json")): os.remove(model["dest"])\''
)
START = "setsid /workspace/start.sh > /tmp/start.log 2>&1 < /dev/null &"
SUPERVISORD_UP = "until pgrep -x supervisord > /dev/null; do sleep 0.1; done"


def boot(state: dict[str, Any], pod: dict[str, Any], cap: int, model_bytes: int, port: int) -> None:
    """The boot phase of a pod a deploy prepared, with only its models to fetch (see the
    module's docstring); prints its figures."""
    ssh = ssh_argv(state, pod)
    deploy = subprocess.run(
        [sys.executable, "-c", DEPLOY], cwd=REPO, capture_output=True, text=True
    )
    if deploy.returncode != 0:
        sys.exit(
            f"bench.serve: the first deploy failed:\n{deploy.stdout[-3000:]}{deploy.stderr[-3000:]}"
        )
    subprocess.run([*ssh, STOPPED_WITHOUT_MODELS], check=True)
    cap_link(state, cap)
    began = time.monotonic()
    subprocess.run([*ssh, START], check=True)
    subprocess.run([*ssh, SUPERVISORD_UP], check=True, timeout=600)
    supervisord = time.monotonic() - began
    models = subprocess.Popen([*ssh, f"{boot_models_wait()} > /dev/null"])
    first_answer = models_in = None
    while first_answer is None or models_in is None:
        now = time.monotonic() - began
        if first_answer is None and answers(pod["address"], port):
            first_answer = now
        if models_in is None and models.poll() is not None:
            if models.returncode != 0:
                sys.exit("bench.serve: the boot's model fetch failed (see /tmp/start.log)")
            models_in = now
        time.sleep(0.2)
    bytes_only = model_bytes / cap
    print(f"boot phase (start.sh), the stack in place; link {cap / MB:.1f} MB/s")
    print(f"models: {model_bytes / MB:.0f} MB, alone on the link: {bytes_only:.1f} s")
    print(f"supervisord started: {supervisord:.1f} s after start.sh began")
    print(
        f"ComfyUI first answered: {first_answer:.1f} s"
        f" ({'before' if first_answer < models_in else 'after'} the last model file)"
    )
    print(
        f"every model file in: {models_in:.1f} s; {models_in / bytes_only:.2f}x the bytes-only time"
    )
    # Before, start.sh started supervisord after the fetch: ComfyUI answered only once its
    # own start (first answer - supervisord here) followed the last model file.
    before = models_in + (first_answer - supervisord)
    print(
        f"before (supervisord after the models; computed): first answer at about"
        f" {before:.1f} s, {before / bytes_only:.2f}x; now {first_answer:.1f} s"
    )


if __name__ == "__main__":
    main()
