"""One sandbox for the e2e session: three pods, the hub and S3, torn down even on failure."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# pyinfra's CLI patches ssl with gevent on import (the deploys here run through it): first,
# before a test module's boto3 loads urllib3, or boto3's ssl context recurses forever.
import pyinfra_cli  # noqa: F401
import pytest

# Two stacks: the RTX 5090 (Blackwell, sm_120) gets torch28-cu128, the others torch25-cu124.
GPUS = ["rtx-4080-super", "h100", "rtx-5090"]
# Away from 127.0.0.2.., where a developer's own `python -m sandbox up` pods listen.
FIRST_ADDRESS = 40
GATED_REPO = "lightx2v/Qwen-Image-Lightning"
HUB_TOKEN = "hf_sandbox_e2e_token"


@pytest.fixture(scope="session")
def sandbox(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    if os.geteuid() != 0:
        pytest.skip("the sandbox needs root (namespaces, mounts)")
    from sandbox import control

    # A session of podless tests alone (bin/test runs them as one, beside the others) gets
    # the hub, S3 and git without the GPU pods it would never converge.
    needs_pods = any(not item.get_closest_marker("podless") for item in request.session.items)

    # A SIGTERM (CI timeout, kill) unwinds through the finally below instead of
    # leaving pods, the hub, S3 and git running.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    base = tmp_path_factory.mktemp("sandbox")
    previous = os.environ.get("PODFORGE_SANDBOX_DIR")
    os.environ["PODFORGE_SANDBOX_DIR"] = str(base)
    try:
        state = control.up(
            GPUS if needs_pods else [],
            base,
            first_address=FIRST_ADDRESS,
            hub_token=HUB_TOKEN,
            gated=[GATED_REPO],
        )
        yield state
    finally:
        control.down(base)
        if previous is None:
            os.environ.pop("PODFORGE_SANDBOX_DIR", None)
        else:
            os.environ["PODFORGE_SANDBOX_DIR"] = previous


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(f"terminated by signal {signum}")


def pod_shell(state: dict[str, Any], pod: dict[str, Any], command: str, check: bool = True) -> str:
    """Run a command on a sandbox pod over its real SSH; its stdout (and, when ``check`` is
    off, its stderr after it: the caller judges the output)."""
    from sandbox.control import ssh_argv

    result = subprocess.run(
        [*ssh_argv(state, pod), command],
        capture_output=True,
        text=True,
        check=check,
        timeout=120,
    )
    return result.stdout if check else f"exit={result.returncode}\n{result.stdout}{result.stderr}"


@pytest.fixture(scope="session")
def sandbox_dir(sandbox: dict[str, Any]) -> Path:
    return Path(sandbox["base"])


def changed_operations(log: str) -> list[str]:
    """Rows of pyinfra's results table that report a success (a change)."""
    table = log[log.index("--> Results:") :]
    return [
        row.strip().split("  ")[0]
        for row in table.splitlines()
        if re.search(r"\s1\s+1\s+-\s+-\s*$", row)
    ]


def running_programs(state: dict[str, Any], pod: dict[str, Any]) -> dict[str, int]:
    """program -> pid of every RUNNING program, as supervisorctl reports them."""
    found = {}
    # supervisorctl exits 3 while a program is not RUNNING: its lines are the answer here.
    for line in pod_shell(state, pod, 'supervisorctl status; echo "exit=$?"').splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[1] == "RUNNING":
            found[parts[0]] = int(parts[3].rstrip(","))
    return found


# Where a deploy writes: what may hold a secret.
WRITTEN = "/etc/supervisor /etc/systemd /opt/podforge /workspace/start.sh /workspace/logs"


def files_holding(state: dict[str, Any], pod: dict[str, Any], secret: str) -> list[str]:
    """'<mode> <path>' of every file the deploy wrote (or the login keeps) holding ``secret``."""
    found = pod_shell(
        state,
        pod,
        f"grep -rl -- {secret} {WRITTEN} /workspace/.podforge | xargs -r stat -c '%a %n'",
    )
    return found.strip().splitlines()


def control_hub(state: dict[str, Any], what: str, body: dict[str, Any]) -> None:
    """Switch the session hub's faults or Xet offer (``POST /_control/<what>``)."""
    request = urllib.request.Request(
        f"{state['hub']['url']}/_control/{what}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request).read()


def comfyui_answers(address: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}:{port}/system_stats", timeout=2) as answer:
            return answer.status == 200
    except (OSError, urllib.error.URLError):
        return False
