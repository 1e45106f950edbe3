"""`podforge stack check` and `podforge stack install`: pip's resolver, asked before installing.

check    resolves the whole environment (profile pins as constraints over every requirement
         file) with ``pip install --dry-run --report``, reading wheel metadata by HTTP range
         (fast-deps) so the multi-GB wheels are not downloaded; prints what would be installed.
install  (on the pod, run by the deploy) the same check, then installs exactly what it
         resolved, decides the shared imports (cv2, onnxruntime), runs ``pip check`` and
         stamps the result so the next deploy knows there is nothing to do.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

from podforge.environment import (
    SharedImport,
    StackRequest,
    explain_conflict,
    lock_is_installed,
    pin_conflicts,
    requirement_lines,
    shared_import_winners,
)

# pip refuses --platform without --only-binary=:all:; PyPI's torch 2.5.1 is manylinux1.
_PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
    "linux_x86_64",
)


class StackError(RuntimeError):
    """The environment cannot be had; the message names who asked for what."""


def read_sources(request: StackRequest) -> dict[str, list[Requirement]]:
    """Each source's requirements; a node without a requirements.txt asks for nothing."""
    sources = {}
    for name, path in request.sources.items():
        file = Path(path)
        sources[name] = requirement_lines(file.read_text()) if file.exists() else []
    sources["podforge"] = [Requirement(text) for text in request.tools]
    if request.extra:
        sources["OpenMMLab"] = [Requirement(text) for text in request.extra]
    return sources


def _pip_args(request: StackRequest, constraints_file: str, with_source_builds: bool) -> list[str]:
    args = ["-c", constraints_file]
    for path in request.sources.values():
        if Path(path).exists():
            args += ["-r", path]
    args += [*request.pins, *request.tools]
    args += [
        spec
        for spec in request.extra
        if with_source_builds or spec not in request.build_from_source
    ]
    if request.flash_attn_wheel:
        args.append(f"flash-attn @ {request.flash_attn_wheel}")
    return args + _index_args(request, with_wheelhouse=with_source_builds)


def resolve(
    request: StackRequest,
    python_version: tuple[int, int] | None = None,
    with_source_builds: bool = True,
) -> list[dict[str, Any]]:
    """pip's resolution of the request: [{name, version, url, direct}], or StackError."""
    sources = read_sources(request)
    _say(f"stack: resolving {request.profile} with {len(sources)} requirement sources")
    problems = pin_conflicts(sources, request.pins, request.profile)
    if problems:
        raise StackError("; ".join(problems))
    with tempfile.TemporaryDirectory(prefix="podforge-stack-") as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text("\n".join(request.constraints) + "\n")
        report = Path(tmp) / "report.json"
        argv = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--disable-pip-version-check",
            "--use-feature=fast-deps",
            "--report",
            str(report),
            *_target_args(python_version, tmp),
            *_pip_args(request, str(constraints), with_source_builds),
        ]
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            raise StackError(explain_conflict(done.stdout + done.stderr, sources, request.profile))
        answer = json.loads(report.read_text())
    return [
        {
            "name": item["metadata"]["name"],
            "version": item["metadata"]["version"],
            "url": item["download_info"]["url"],
            "direct": bool(item.get("is_direct")),
        }
        for item in answer["install"]
    ]


def _target_args(python_version: tuple[int, int] | None, tmp: str) -> list[str]:
    """Resolve for another Python/platform than this one: wheels only, by their tags."""
    here = sys.version_info[:2]
    native = platform.system() == "Linux" and platform.machine() == "x86_64"
    if python_version is None or (python_version == here and native):
        return []  # this machine is the target: sdists (fvcore, iopath) can be built too
    major, minor = python_version
    args = [
        "--python-version",
        f"{major}.{minor}",
        "--implementation",
        "cp",
        "--abi",
        f"cp{major}{minor}",
        "--only-binary=:all:",
        "--target",
        str(Path(tmp) / "target"),
    ]
    for tag in _PLATFORMS:
        args += ["--platform", tag]
    return args


def _say(line: str) -> None:
    """Progress on stderr: stdout of `stack check` is the resolved list alone."""
    print(line, file=sys.stderr, flush=True)


def _pip(what: str, argv: Sequence[str]) -> None:
    """Run pip quietly (its errors still show, live); say what it does; fail on its exit."""
    _say(f"stack: {what}")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet", *argv]
    )
    if done.returncode != 0:
        raise StackError(f"pip failed while {what} (exit {done.returncode}); its output is above")


def _requirement(item: dict[str, Any]) -> str:
    return (
        f"{item['name']} @ {item['url']}"
        if item["direct"]
        else f"{item['name']}=={item['version']}"
    )


def build_source_wheels(request: StackRequest) -> None:
    """mmcv and alike: built once into the wheelhouse on the volume, reused by later pods."""
    if not request.build_from_source:
        return
    assert request.wheelhouse is not None
    Path(request.wheelhouse).mkdir(parents=True, exist_ok=True)
    for spec in request.build_from_source:
        requirement = Requirement(spec)
        version = next(iter(requirement.specifier)).version
        pattern = f"{requirement.name.replace('-', '_')}-{version}-*.whl"
        if glob.glob(os.path.join(request.wheelhouse, pattern)):
            _say(f"stack: {spec} is in the wheelhouse {request.wheelhouse}")
            continue
        _say(f"stack: building {spec} from source (tens of minutes, once)")
        os.environ.update(MMCV_WITH_OPS="1", FORCE_CUDA="1")
        nvcc = shutil.which("nvcc") or next(
            iter(sorted(glob.glob("/usr/local/cuda*/bin/nvcc"))), None
        )
        if nvcc is None:
            raise StackError(f"{spec} compiles CUDA code but there is no nvcc on this pod")
        # NVIDIA's toolkit package does not put nvcc on PATH; torch's build finds CUDA_HOME.
        os.environ.setdefault("CUDA_HOME", str(Path(nvcc).resolve().parent.parent))
        _pip(
            f"building {spec} into {request.wheelhouse}",
            ["wheel", "--no-deps", "--no-build-isolation", "-w", request.wheelhouse, spec],
        )


def _requirement_texts(request: StackRequest) -> dict[str, str | None]:
    return {
        name: Path(path).read_text() if Path(path).exists() else None
        for name, path in request.sources.items()
    }


def _installed() -> dict[str, str]:
    return {dist.metadata["Name"]: dist.version for dist in metadata.distributions()}


def _write_stamp(
    stamp: Path, request: StackRequest, inputs: str, lock: dict[str, str], shared: list[Any]
) -> None:
    record = {"key": request.key(), "inputs": inputs, "lock": lock, "shared_imports": shared}
    stamp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def install(request: StackRequest, stamp: Path) -> list[SharedImport]:
    """Check, then install exactly what resolved; pip check; stamp. Returns the decisions."""
    inputs = request.inputs(_requirement_texts(request))
    previous = json.loads(stamp.read_text()) if stamp.exists() else None
    if (
        previous is not None
        and previous.get("inputs") == inputs
        and not lock_is_installed(previous["lock"], _installed())
    ):
        # Pins moved, requirements did not: the installed lock still answers the request.
        _write_stamp(stamp, request, inputs, previous["lock"], previous["shared_imports"])
        _say("stack: the requirement files are unchanged and installed: nothing to resolve")
        return [SharedImport(**shared) for shared in previous["shared_imports"]]
    if request.build_from_source:
        # Source builds need torch in place: check what can be checked, install the pins,
        # build, then resolve the whole.
        resolve(request, with_source_builds=False)
        _pip(
            "installing the profile's pins first", ["install", *request.pins, *_index_args(request)]
        )
        build_source_wheels(request)
    resolved = resolve(request)
    decisions = shared_import_winners({item["name"]: item["version"] for item in resolved})
    for decision in decisions:
        _say(f"stack: warning: {decision.warning()}")
    with tempfile.TemporaryDirectory(prefix="podforge-stack-") as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text("\n".join(request.constraints) + "\n")
        _pip(
            f"installing {len(resolved)} distributions exactly as resolved",
            [
                "install",
                "--no-deps",
                "-c",
                str(constraints),
                *_index_args(request),
                *[_requirement(item) for item in resolved],
            ],
        )
    for decision in decisions:
        _pip(
            f"installing {decision.winner} last, for its `{decision.module}`",
            ["install", "--no-deps", "--force-reinstall", f"{decision.winner}=={decision.version}"],
        )
    check = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    if check.returncode != 0:
        raise StackError(f"pip check found broken requirements: {check.stdout.strip()}")
    lock = {item["name"]: metadata.version(item["name"]) for item in resolved}
    _write_stamp(stamp, request, inputs, lock, [d.model_dump() for d in decisions])
    return decisions


def _index_args(request: StackRequest, with_wheelhouse: bool = True) -> list[str]:
    """The profile's torch index and, once source builds are in it, the wheelhouse."""
    args = []
    if request.torch_index_url:
        args += ["--extra-index-url", request.torch_index_url]
    if request.wheelhouse and with_wheelhouse:
        args += ["--find-links", request.wheelhouse]
    return args


def request_from_dirs(
    profile: str,
    dirs: Sequence[str],
    python: tuple[int, int],
    flash_attn: bool = True,
    torch_index: bool = True,
) -> StackRequest:
    """A request for checkouts on this machine (e.g. shared/upstream), for `stack check`."""
    from podforge.config import Settings
    from podforge.environment import stack_request
    from podforge.gpu import GpuReport
    from podforge.plan import build_plan

    settings = Settings(stack_profile=profile, custom_nodes=[])
    plan = build_plan(settings, GpuReport(), python, "x86_64")
    request = stack_request(settings, plan)
    return request.model_copy(
        update={
            "sources": {Path(d).name: str(Path(d) / "requirements.txt") for d in dirs},
            "flash_attn_wheel": request.flash_attn_wheel if flash_attn else None,
            "torch_index_url": request.torch_index_url if torch_index else None,
            "commits": {},
        }
    )


def main(args: argparse.Namespace) -> int:
    try:
        if args.request:
            request = StackRequest.model_validate_json(Path(args.request).read_text())
        else:
            request = request_from_dirs(
                args.profile,
                args.dirs,
                args.python_version,
                flash_attn=not args.without_flash_attn,
                torch_index=not args.without_torch_index,
            )
        if args.stack_verb == "install":
            install(request, Path(args.stamp))
            _say(f"stack: {request.profile} installed and pip check clean")
            return 0
        resolved = resolve(request, None if args.request else args.python_version)
    except StackError as error:
        print(f"podforge stack: {error}", file=sys.stderr)
        return 1
    for item in sorted(resolved, key=lambda i: i["name"].lower()):
        print(f"{item['name']} {item['version']}")
    names = {item["name"]: item["version"] for item in resolved}
    for decision in shared_import_winners(names):
        print(f"warning: {decision.warning()}")
    print(f"stack check: {request.profile} resolves: {len(resolved)} distributions")
    return 0
