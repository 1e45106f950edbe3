"""`podforge stack lock` and `podforge stack check`: uv's resolver, on the laptop.

lock   resolves a profile's whole environment (podforge/core/lock.py says what goes in) with
       ``uv pip compile --generate-hashes`` for each target (a Python and a platform), in
       parallel, and writes ``locks/<profile>.txt`` under a header naming its inputs. uv
       reads the index as of the moment the lock records (``--exclude-newer``) and keeps the
       present lock's versions where they still fit (an index can change its past: a release
       dated before the moment may appear after it), so the same inputs give the same file
       on any later day; ``--upgrade`` moves that moment to now, drops the preferences and
       says what moved.
check  the same resolution, printed, nothing written: does this set resolve? Either way a
       conflict is traced to the repository that asked.

Pods never resolve: the deploy installs the committed lock (tasks/python_stack.py).
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from podforge.controller.tools import tool_requirements
from podforge.controller.upstream import UpstreamError, requirement_texts
from podforge.core.environment import explain_uv_conflict, pin_conflicts, requirement_lines
from podforge.core.errors import PodforgeError
from podforge.core.lock import (
    LOCK_TARGETS,
    TOOLS_LOCK,
    LockError,
    LockInputs,
    Target,
    changes,
    entries,
    for_pod,
    lock_file,
    lock_inputs,
    lock_name,
    lock_pins,
    marked,
    moved,
    preferences,
    read_header,
    read_resolved_as_of,
    refresh_command,
    render_header,
    tools_lock_inputs,
)
from podforge.core.stacks import (
    SHARED_IMPORTS,
    STACK_FEATURES,
    STACK_PROFILES,
    UV_ENVIRONMENT,
    StackFeature,
    StackProfile,
)
from podforge.settings import load
from podforge.workflows.files import with_workflows

if TYPE_CHECKING:
    from podforge.core.config import Settings

REPO = Path(__file__).resolve().parents[2]
TOOLS_SOURCE = "podforge"  # the name pins, tools and extras go by in uv's annotations


class StackError(PodforgeError, RuntimeError):
    """The environment cannot be had; the message names who asked for what."""


def _say(line: str) -> None:
    """Progress on stderr: stdout of `stack check` is the resolved list alone."""
    print(line, file=sys.stderr, flush=True)


def uv_binary() -> str:
    """The uv of podforge's own environment (the uv package: `pip install -e .[deploy]`)."""
    # Imported here: the boot phase's deployer venv has no uv, and never calls this.
    from uv import find_uv_bin  # noqa: PLC0415

    return find_uv_bin()


def now() -> str:
    """This moment as uv's --exclude-newer takes it (RFC 3339, UTC, whole seconds)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def resolve(
    inputs: LockInputs, texts: Mapping[str, str | None], as_of: str, present: str = ""
) -> str:
    """uv's hashed resolution of ``inputs`` for every target (requirement files as
    ``texts``), reading the index as it was at ``as_of`` and keeping the ``present`` lock's
    versions where they still fit, each entry marked with its target: the lock's body."""
    sources = {name: requirement_lines(text or "") for name, text in texts.items()}
    sources[TOOLS_SOURCE] = [Requirement(line) for line in inputs.tools]
    problems = pin_conflicts(sources, inputs.pins, inputs.profile)
    if problems:
        raise StackError("; ".join(problems))
    with tempfile.TemporaryDirectory(prefix="podforge-lock-") as tmp:
        work = Path(tmp)
        # Relative paths: uv's "# via -r ComfyUI/requirements.txt" names the repository.
        files = []
        for name, text in texts.items():
            if text is not None:
                (work / name).mkdir()
                (work / name / "requirements.txt").write_text(text)
                files.append(f"{name}/requirements.txt")
        (work / f"{TOOLS_SOURCE}.in").write_text("\n".join([*inputs.pins, *inputs.tools]) + "\n")
        (work / "constraints.txt").write_text("\n".join(inputs.constraints) + "\n")
        (work / "overrides.txt").write_text("\n".join(inputs.overrides) + "\n")
        argv = [
            uv_binary(),
            "pip",
            "compile",
            "--quiet",
            "--no-header",
            "--generate-hashes",
            "--exclude-newer",
            as_of,
            "-c",
            "constraints.txt",
            "--overrides",
            "overrides.txt",
            f"{TOOLS_SOURCE}.in",
            *files,
        ]
        if inputs.index:
            # The profile's torch build lives there; everything else comes from PyPI.
            argv += ["--extra-index-url", inputs.index, "--index-strategy", "unsafe-best-match"]
        _say(
            f"stack: resolving {inputs.profile} with uv ({len(files)} requirement files) for"
            f" {', '.join(str(target) for target in LOCK_TARGETS)}, the index as of {as_of}"
        )

        def one(target: Target) -> str:
            # uv takes an existing output file's pins as preferences.
            output = work / f"lock-{target.python}.txt"
            output.write_text(preferences(present, target))
            done = subprocess.run(
                [
                    *argv,
                    "--python-version",
                    target.python,
                    "--python-platform",
                    target.platform,
                    "--output-file",
                    output.name,
                ],
                cwd=work,
                capture_output=True,
                text=True,
                env={**os.environ, **UV_ENVIRONMENT},
            )
            if done.returncode != 0:
                why = explain_uv_conflict(done.stderr, sources, inputs.profile, inputs.constraints)
                raise StackError(
                    f"{why}; uv read the index as of {as_of}: what needs a newer release needs"
                    " `stack lock --upgrade`"
                )
            body = output.read_text()
            _check_shared_imports(body, target)
            return f"# Python {target.python} on {target.platform}\n" + marked(body, target)

        with ThreadPoolExecutor(len(LOCK_TARGETS)) as pool:
            return "".join(pool.map(one, LOCK_TARGETS))


def _check_shared_imports(lock_body: str, target: Target) -> None:
    """Distributions sharing an import (cv2) must be at one version: the last installed wins."""
    versions: dict[str, set[str]] = {}
    for entry in entries(lock_body):
        versions.setdefault(entry.name, set()).add(entry.version)
    for module, providers in SHARED_IMPORTS.items():
        present = {name: sorted(versions[name]) for name in providers if name in versions}
        if len({tuple(v) for v in present.values()}) > 1:
            shown = ", ".join(f"{name} {'/'.join(v)}" for name, v in present.items())
            raise StackError(
                f"the providers of `{module}` resolved to different versions on {target}"
                f" ({shown}): constrain them to one in the profile (podforge/core/stacks.py)"
            )


def write_lock(
    profile: StackProfile,
    texts: Mapping[str, str | None],
    repo: Path,
    upgrade: bool = False,
    feature: StackFeature | None = None,
) -> tuple[Path, list[str]]:
    """Resolve and write ``locks/<profile>[+feature].txt``: the header, then uv's answer. The
    index is read as of the moment the present lock records, unless ``upgrade`` (or there is
    none): then as of now. Returns the path and what moved against the present lock."""
    return _write(lock_inputs(profile, texts, feature), texts, repo, upgrade)


def write_tools_lock(repo: Path, upgrade: bool = False) -> tuple[Path, list[str]]:
    """``locks/tools.txt``: the pod tools' own venv, as ``write_lock`` writes a stack's."""
    return _write(tools_lock_inputs(tool_requirements(repo)), {}, repo, upgrade)


def _write(
    inputs: LockInputs, texts: Mapping[str, str | None], repo: Path, upgrade: bool
) -> tuple[Path, list[str]]:
    path = repo / lock_file(inputs.profile)
    before = path.read_text() if path.is_file() else ""
    as_of = read_resolved_as_of(before)
    if upgrade or as_of is None:
        as_of = now()
    body = resolve(inputs, texts, as_of, "" if upgrade else before)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_header(inputs, as_of) + body)
    # A first lock moved nothing: there was nothing to move.
    return path, moved(before, body) if entries(before) else []


def committed_lock(
    settings: Settings,
    profile: StackProfile,
    local_checkouts: Mapping[str, str] | None = None,
    feature: StackFeature | None = None,
) -> tuple[str, LockInputs | None, str | None]:
    """(the text, the inputs, why it cannot be installed: None when it can) of the committed
    lock of ``profile`` (with ``feature``), its inputs checked against today's
    (``local_checkouts``: name -> a checkout on this machine at its pin, read in place)."""
    name = lock_name(profile.name, feature)
    path = lock_file(name)
    if not (REPO / path).is_file():
        where = f" where {profile.torch_index_url} is reachable" if profile.torch_index_url else ""
        return "", None, f"{path} is missing: {_refresh(name)}{where}"
    try:
        texts = requirement_texts(lock_pins(settings), local_checkouts)
        today = lock_inputs(profile, texts, feature)
    except UpstreamError as error:
        return "", None, str(error)
    return _committed(today, "the stack lock")


def committed_tools_lock(repo: Path = REPO) -> tuple[str, LockInputs | None, str | None]:
    """``committed_lock`` of the pod tools' lock, against pyproject.toml's tool list today."""
    if not (repo / lock_file(TOOLS_LOCK)).is_file():
        return "", None, f"{lock_file(TOOLS_LOCK)} is missing: {_refresh(TOOLS_LOCK)}"
    return _committed(tools_lock_inputs(tool_requirements(repo)), "the tools lock", repo)


def _refresh(profile: str) -> str:
    return f"run `{refresh_command(profile)}` and commit it"


def _committed(
    today: LockInputs, what: str, repo: Path = REPO
) -> tuple[str, LockInputs | None, str | None]:
    path = lock_file(today.profile)
    text = (repo / path).read_text()
    try:
        locked = read_header(text, path)
    except LockError as error:
        return "", None, str(error)
    if locked.digest() != today.digest():
        changed = "; ".join(changes(locked, today))
        return text, locked, f"{what} {path} is stale ({changed}): {_refresh(today.profile)}"
    return text, locked, None


def settings_texts(dirs: list[str]) -> dict[str, str | None]:
    """Requirement texts: of DIRS (named by directory) when given, else of the settings'
    repositories at their pins (group_data/all.py and the environment, as a deploy reads,
    with the packs its workflows name)."""
    if dirs:
        return {Path(d).name: _read(Path(d) / "requirements.txt") for d in dirs}
    # The node packs the settings' workflows bring are locked as the user's own.
    settings, _ = with_workflows(load({}, with_group_data=True))
    return requirement_texts(lock_pins(settings))


def _read(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None


def main(args: argparse.Namespace) -> int:
    try:
        if args.profile == TOOLS_LOCK:
            inputs, texts = tools_lock_inputs(tool_requirements()), {}
        else:
            texts = settings_texts(getattr(args, "dirs", []))
            feature = STACK_FEATURES[args.feature] if args.feature else None
            inputs = lock_inputs(STACK_PROFILES[args.profile], texts, feature)
        if args.stack_verb == "lock":
            path, moves = _write(inputs, texts, REPO, upgrade=args.upgrade)
            count = len(entries(path.read_text()))
            where = path.relative_to(REPO)
            _say(f"stack lock: wrote {where}: {count} entries for {len(LOCK_TARGETS)} targets")
            _say(f"stack lock: moved: {', '.join(moves)}" if moves else "stack lock: nothing moved")
            _say("commit it")
            return 0
        body = resolve(inputs, texts, now())
    except PodforgeError as error:
        print(f"podforge stack: {error}", file=sys.stderr)
        return 1
    for target in LOCK_TARGETS:
        print(f"# {target}")
        python = (*map(int, target.python.split(".")), 0)
        for entry in for_pod(body, python, target.machine):
            print(f"{entry.name} {entry.version}")
    names = {canonicalize_name(entry.name) for entry in entries(body)}
    print(f"stack check: {inputs.profile} resolves: {len(names)} distributions")
    return 0
