"""`podforge verify`: the pod serves what its plan says (run on the pod; standard library).

- every ComfyUI instance answers ``GET /system_stats`` on its port, with the plan's flags;
- r2sync (when on) runs (RUNNING under supervisor, active/running under systemd) and its
  ``--test`` round trip passes;
- on GPU pods, torch in the venv sees CUDA and the plan's number of GPUs;
- each workflow podforge fitted to the pod finds its model files and node types.

Each problem names the program, the port, the cause and the program's last log lines.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from podforge.serving import serving_line, serving_problems


def verify(
    plan: dict[str, Any],
    venv: Path,
    log_dir: Path,
    r2_env: Path | None,
    timeout: float,
    quick: bool = False,
) -> list[str]:
    """What keeps the pod from serving its plan (nothing: it serves).

    ``quick``: only what can change while no deploy changes anything (ComfyUI answers with
    the plan's flags, supervisor keeps the programs RUNNING); the S3 round trip and torch's
    view of the GPUs were checked by the run that last changed the pod.
    """
    problems = serving_problems(plan["comfyui"], r2_env is not None, str(log_dir), timeout)
    if r2_env is not None and not quick:
        test = subprocess.run(
            [str(venv / "bin" / "podforge"), "r2sync", "--test"],
            capture_output=True,
            text=True,
            env={**os.environ, "R2_ENV_FILE": str(r2_env)},
        )
        if test.returncode != 0:
            cause = (test.stderr.strip().splitlines() or ["no output"])[-1]
            problems.append(f"r2sync --test failed: {cause.split('FAILED: ', 1)[-1]}")
    if plan["gpus"] and not quick:
        problems.extend(_torch_sees(plan, venv))
    return problems


def _torch_sees(plan: dict[str, Any], venv: Path) -> list[str]:
    program = (
        "import json, torch; "
        "print(json.dumps([torch.cuda.is_available(), torch.cuda.device_count()]))"
    )
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", program], capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        return [f"torch does not import: {(done.stderr.strip().splitlines() or ['?'])[-1]}"]
    available, count = json.loads(done.stdout)
    if not available:
        return ["torch does not see CUDA (driver, or a CPU build of torch?)"]
    physical = {gpu["gpu_index"] for gpu in plan["gpus"] if gpu["mig"] is None}
    if physical and count != len(physical) and not any(g["mig"] for g in plan["gpus"]):
        return [f"torch sees {count} GPUs, the plan has {len(physical)}"]
    return []


def fitted_workflows_problems(stamp: Path, comfyui_dir: Path, models_dir: Path) -> list[str]:
    """The workflows the stamp says podforge installed, checked (their lines printed)."""
    from podforge.workflows_cli import check_workflows

    installed = [Path(p) for p in json.loads(stamp.read_text())["files"]] if stamp.exists() else []
    if not installed or check_workflows(installed, comfyui_dir, models_dir):
        return []
    return ["workflows: a fitted workflow misses a model file or node type (MISSING above)"]


def main(
    plan_file: str,
    venv: str,
    log_dir: str,
    r2_env: str | None,
    timeout: float,
    quick: bool,
    workflows: tuple[str, str, str] | None = None,
) -> int:
    """``workflows``: (stamp, ComfyUI dir, models dir), checked unless ``quick``."""
    plan = json.loads(Path(plan_file).read_text())
    r2 = Path(r2_env) if r2_env else None
    problems = verify(plan, Path(venv), Path(log_dir), r2, timeout, quick=quick)
    if workflows is not None and not quick:
        stamp, comfyui_dir, models_dir = (Path(p) for p in workflows)
        problems += fitted_workflows_problems(stamp, comfyui_dir, models_dir)
    for problem in problems:
        print(f"verify: FAILED {problem}", flush=True)
    if problems:
        return 1
    r2sync = ("runs" if quick else "works") if r2_env else None
    print(serving_line([instance["port"] for instance in plan["comfyui"]], r2sync))
    return 0
