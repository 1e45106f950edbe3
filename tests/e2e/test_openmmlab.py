"""ENABLE_OPENMMLAB on sandbox pods: mmcv 2.1.0 (PyPI's sdist, CPU ops: the sandbox's
ComfyUI runs --cpu) built once, published to the bucket, taken from there by another pod;
`import mmcv.ops, mmdet, mmpose` from the lock; off again, the venvs are the plain lock's.

The real build takes ~10-17 min on 2 cores. The host keeps its wheel
(/var/cache/podforge/wheelhouse): with it there, the bucket is seeded from it first (as if
another pod had built it) and one pod takes it from there, building nothing; without it,
one pod builds and a second takes it. So a machine pays for the build once.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from conftest import s3_client
from e2e.conftest import pod_shell
from podforge.core.stacks import MMCV
from podforge.core.timeline import Timeline
from podforge.core.wheelhouse import BUCKET_PREFIX, ENTRY, BuildKey, WheelEntry
from sandbox.converge import HostResult, converge_pods
from sandbox.rootfs import CACHE_DIR

pytestmark = pytest.mark.e2e
HOST_WHEELHOUSE = CACHE_DIR / "wheelhouse"
# The sandbox pods' key: Debian 12's Python, PyPI's torch of torch25-cu124, CPU ops.
KEY = BuildKey.of("cp311", "x86_64", {"torch": "2.5.1"}, dict(MMCV.environment))
DIRECTORY = f"{MMCV.name}/{MMCV.version}/{KEY.label}"
POD_WHEELHOUSE = "/workspace/.cache/podforge/wheelhouse"
VENV_PYTHON = "/workspace/venv/bin/python"
TIMELINE = "/opt/podforge/timeline.json"
IMPORTS = "import mmcv, mmcv.ops, mmdet, mmpose; print(mmcv.__version__, mmpose.__version__)"


def host_entry() -> WheelEntry | None:
    path = HOST_WHEELHOUSE / DIRECTORY / ENTRY
    if not path.is_file():
        return None
    entry = WheelEntry.from_json(path.read_text(), str(path))
    return entry if (path.parent / entry.wheel).is_file() else None


def deploy(state: dict[str, Any], pod: dict[str, Any], **data: object) -> HostResult:
    return converge_pods({pod["name"]: data}, workdir=Path(state["base"]))[pod["address"]]


def pod_entry(state: dict[str, Any], pod: dict[str, Any]) -> WheelEntry:
    text = pod_shell(state, pod, f"cat {POD_WHEELHOUSE}/{DIRECTORY}/{ENTRY}")
    return WheelEntry.from_json(text, f"{pod['name']}:{DIRECTORY}/{ENTRY}")


@pytest.fixture
def converged_back(sandbox: dict[str, Any]) -> Any:
    """The pods a test deploys with OpenMMLab (it appends them), converged back without."""
    used: list[dict[str, Any]] = []
    yield used
    for pod in used:
        assert not deploy(sandbox, pod).failed


def test_one_mmcv_build_serves_the_fleet_through_the_bucket(sandbox, converged_back):
    first, second = [p for p in sandbox["pods"] if p["gpu"] in ("rtx-4080-super", "h100")]
    client, bucket = s3_client(sandbox["s3"]), sandbox["s3"]["bucket"]
    prefix = f"{BUCKET_PREFIX}{DIRECTORY}"
    cached = host_entry()
    if cached is not None:
        # Another pod built it before: the bucket holds its wheel and entry.
        wheel = HOST_WHEELHOUSE / DIRECTORY / cached.wheel
        client.upload_file(str(wheel), bucket, f"{prefix}/{cached.wheel}")
        client.put_object(Bucket=bucket, Key=f"{prefix}/{ENTRY}", Body=cached.to_json().encode())

    converged_back.append(first)
    built = deploy(sandbox, first, enable_openmmlab=True)
    assert not built.failed, built.errors
    made = pod_entry(sandbox, first)
    published = json.loads(client.get_object(Bucket=bucket, Key=f"{prefix}/{ENTRY}")["Body"].read())
    assert published["sha256"] == made.sha256
    if cached is not None:
        # The pod took the fleet's wheel and built nothing: a build would have other bytes.
        assert made == cached
    else:
        # This pod built it: the second takes it from the bucket, the same bytes (a wheel
        # built again carries other timestamps, so another sha256).
        converged_back.append(second)
        taken = deploy(sandbox, second, enable_openmmlab=True)
        assert not taken.failed, taken.errors
        assert pod_entry(sandbox, second) == made
    for pod in converged_back:
        versions = pod_shell(sandbox, pod, f"{VENV_PYTHON} -W ignore -c '{IMPORTS}'")
        assert versions.split() == ["2.1.0", "1.3.2"]
        # The sync line uv installed it by names the hash.
        line = pod_shell(sandbox, pod, "cat /opt/podforge/wheelhouse-mmcv.txt")
        assert line.strip().endswith(f"--hash=sha256:{made.sha256}")
        # For the figures: what the feature's venv step took.
        kept = Timeline.from_json(json.loads(pod_shell(sandbox, pod, "cat " + TIMELINE)))
        step = next(s for s in kept.steps if s.name == "Python environment")
        print(f"openmmlab: {pod['name']}: Python environment {step.seconds:.0f} s")
    # Again: nothing to do (the wheel on the volume, the venv holding it).
    again = deploy(sandbox, converged_back[-1], enable_openmmlab=True)
    assert not again.failed
    assert not [name for name in again.changed if name.startswith("Python environment")]

    if cached is None:  # this machine pays for the build once
        target = HOST_WHEELHOUSE / DIRECTORY
        target.mkdir(parents=True, exist_ok=True)
        # What the pod wrote, in its overlay's upper layer on this host.
        upper = Path(first["dir"]) / "upper"
        wheel = upper / POD_WHEELHOUSE.lstrip("/") / DIRECTORY / made.wheel
        shutil.copy(wheel, target / made.wheel)
        (target / ENTRY).write_text(made.to_json())
