"""The stack lock: a profile's whole environment, resolved once, committed in locks/. Pure.

`podforge stack lock` (podforge/controller/stack.py) asks uv to resolve the profile's pins, the
requirements of ComfyUI and of every node podforge may install and ``STACK_EXTRAS``, under
the profile's constraints, once for each target a pod may be
(``LOCK_TARGETS``: its Python and platform), with hashes. The answers go into one file, each
entry marked with its target, under a header naming the inputs. Every pod installs exactly
its target's entries (``uv pip sync``), so a fleet is identical and a user can read what a
pod runs. The pod tools have a lock of their own (``TOOLS_LOCK``: ``tools_lock_inputs``), in
a venv of their own. One resolution per target rather than uv's universal one: each target gets what
it alone resolves to, and the three targets take uv ~5 s together where universal takes ~13 s.

A lock is keyed by what was resolved, not by commit ids: the digest of each requirement
file's text, the pins, constraints, extras and the Python range. A node pin that moves without
touching its requirements keeps the lock; one that changes them makes it stale, and the
deploy refuses a stale lock before any change, naming what changed (``changes``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from pydantic import BaseModel, ConfigDict

from podforge.core.environment import shared_import_winners, version_matches
from podforge.core.errors import PodforgeError
from podforge.core.pins import FEATURE_NODES, RepoPin
from podforge.core.stacks import (
    STACK_EXTRAS,
    TOOLS_LOCK,
    UV_ENVIRONMENT,
    StackFeature,
    StackProfile,
)

if TYPE_CHECKING:
    from podforge.core.config import Settings


@dataclass(frozen=True)
class Target:
    """A kind of pod a lock covers: its Python and its platform (uv's --python-platform)."""

    python: str  # X.Y
    machine: str  # platform_machine
    platform: str  # uv's name for the platform, with the oldest glibc a pod may have

    def __str__(self) -> str:
        return f"{self.python} {self.platform}"

    @property
    def marker(self) -> str:
        return f"python_version == '{self.python}' and platform_machine == '{self.machine}'"


# Ubuntu 22.04 (the CUDA images, RunPod's templates) has 3.10, Debian 12 3.11, Ubuntu 24.04
# 3.12; glibc 2.28 is older than any of them. flash-attn's release wheels are x86_64 only.
LOCK_TARGETS: tuple[Target, ...] = tuple(
    Target(python, "x86_64", "x86_64-manylinux_2_28") for python in ("3.10", "3.11", "3.12")
)
LOCKS_DIR = "locks"
_INPUT = "# input "
# uv resolves as if nothing was uploaded after this moment (--exclude-newer) and keeps the
# present lock's versions (`preferences`), so a re-lock of unchanged inputs writes the same
# file on any later day; `stack lock --upgrade` moves it.
_RESOLVED_AS_OF = "# resolved-as-of: "


class LockError(PodforgeError, ValueError):
    """A lock that cannot be read or used; the message names the file and the fix."""


def lock_name(profile: str, feature: StackFeature | None = None) -> str:
    """A lock's name: the profile's, and the feature adding to it (torch25-cu124+openmmlab)."""
    return f"{profile}+{feature.name}" if feature else profile


def lock_file(name: str) -> str:
    """Where a lock lives, relative to the repository."""
    return f"{LOCKS_DIR}/{name}.txt"


def refresh_command(name: str) -> str:
    profile, _, feature = name.partition("+")
    return f"podforge stack lock --profile {profile}" + (f" --with {feature}" if feature else "")


def text_digest(text: str | None) -> str | None:
    """What a lock records of a requirement file: its sha256 (None: the node has none)."""
    return None if text is None else hashlib.sha256(text.encode()).hexdigest()[:16]


class LockInputs(BaseModel):
    """Everything a lock was resolved from; equal inputs resolve to the same lock."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    profile: str
    targets: list[str]  # str(Target) of every target resolved
    index: str | None  # the profile's own torch index, next to PyPI
    pins: list[str]
    constraints: list[str]
    tools: list[str]  # STACK_EXTRAS; in the tools' own lock, what the pod tools require
    requirements: dict[str, str | None]  # repository name -> text_digest of requirements.txt
    overrides: list[str] = []  # a feature's (StackFeature.overrides)

    def digest(self) -> str:
        fields = self.model_dump(mode="json")
        if not fields["overrides"]:
            del fields["overrides"]  # the digest of a lock without any, as before they existed
        canonical = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def lock_pins(settings: Settings) -> list[RepoPin]:
    """Every repository whose requirements a lock covers: ComfyUI, the custom nodes and the
    nodes of every feature (enabled or not), so turning a feature on needs no new lock."""
    listed = {node.name for node in settings.custom_nodes}
    brought = {
        node.name: node
        for nodes in FEATURE_NODES.values()
        for node in nodes
        if node.name not in listed
    }
    return [settings.comfyui_repo, *settings.custom_nodes, *brought.values()]


def lock_inputs(
    profile: StackProfile,
    texts: Mapping[str, str | None],
    feature: StackFeature | None = None,
) -> LockInputs:
    """The inputs of ``profile``'s lock (with what ``feature`` adds), given each repository's
    requirements.txt text (the pod tools are not in it: they have their own venv and lock,
    ``tools_lock_inputs``)."""
    return LockInputs(
        profile=lock_name(profile.name, feature),
        targets=[str(target) for target in LOCK_TARGETS],
        index=profile.torch_index_url,
        pins=list(profile.pins),
        constraints=[*profile.constraints, *(feature.constraints if feature else ())],
        tools=[*STACK_EXTRAS, *(feature.packages if feature else ())],
        requirements={name: text_digest(text) for name, text in sorted(texts.items())},
        overrides=list(feature.overrides) if feature else [],
    )


def tools_lock_inputs(tools: Iterable[str]) -> LockInputs:
    """The inputs of the tools' lock: what the pod-side tools require, from PyPI, nothing
    of ComfyUI's."""
    return LockInputs(
        profile=TOOLS_LOCK,
        targets=[str(target) for target in LOCK_TARGETS],
        index=None,
        pins=[],
        constraints=[],
        tools=list(tools),
        requirements={},
    )


def render_header(inputs: LockInputs, resolved_as_of: str) -> str:
    """The lock's header: its inputs, one per line, their digest and the index's moment."""
    lines = [
        f"# podforge stack lock for {inputs.profile}: do not edit; refresh it with",
        f"#   {refresh_command(inputs.profile)}",
        "# Every pod of this profile installs exactly what follows (uv pip sync); a deploy",
        "# refuses this file once the inputs below no longer match its settings.",
        f"# inputs-digest: {inputs.digest()}",
        f"{_RESOLVED_AS_OF}{resolved_as_of}",
        *(f"{_INPUT}target: {target}" for target in inputs.targets),
        f"{_INPUT}index: {inputs.index or 'PyPI only'}",
        *(f"{_INPUT}pin: {pin}" for pin in inputs.pins),
        *(f"{_INPUT}constraint: {line}" for line in inputs.constraints),
        *(f"{_INPUT}tool: {line}" for line in inputs.tools),
        *(f"{_INPUT}override: {line}" for line in inputs.overrides),
        *(
            f"{_INPUT}requirements: {name} {digest or 'none'}"
            for name, digest in inputs.requirements.items()
        ),
    ]
    return "\n".join(lines) + "\n"


def read_header(text: str, where: str) -> LockInputs:
    """The inputs a lock's header names; LockError naming ``where`` when it has none."""
    fields: dict[str, list[str]] = {}
    profile = None
    for line in text.splitlines():
        if line.startswith("# podforge stack lock for "):
            profile = line.removeprefix("# podforge stack lock for ").split(":", 1)[0]
        elif line.startswith(_INPUT):
            key, _, value = line.removeprefix(_INPUT).partition(": ")
            fields.setdefault(key, []).append(value)
        elif line and not line.startswith("#"):
            break
    if profile is None or "target" not in fields:
        raise LockError(f"{where} has no podforge lock header: write it with `podforge stack lock`")
    index = fields["index"][0]
    requirements = {}
    for entry in fields.get("requirements", []):
        name, digest = entry.split(" ", 1)
        requirements[name] = None if digest == "none" else digest
    return LockInputs(
        profile=profile,
        targets=fields["target"],
        index=None if index == "PyPI only" else index,
        pins=fields.get("pin", []),
        constraints=fields.get("constraint", []),
        tools=fields.get("tool", []),
        requirements=requirements,
        overrides=fields.get("override", []),
    )


def read_resolved_as_of(text: str) -> str | None:
    """The moment a lock's index was read as of (None: a lock written before it was kept)."""
    for line in text.splitlines():
        if line.startswith(_RESOLVED_AS_OF):
            return line.removeprefix(_RESOLVED_AS_OF)
        if line and not line.startswith("#"):
            break
    return None


def changes(locked: LockInputs, wanted: LockInputs) -> list[str]:
    """What differs between the inputs a lock was resolved from and today's, for people."""
    found = []
    if locked.index != wanted.index:
        found.append(f"index {locked.index or 'PyPI only'} -> {wanted.index or 'PyPI only'}")
    for kind in ("targets", "pins", "constraints", "tools", "overrides"):
        before, after = getattr(locked, kind), getattr(wanted, kind)
        added = [line for line in after if line not in before]
        removed = [line for line in before if line not in after]
        if added or removed:
            moves = [*(f"+{line}" for line in added), *(f"-{line}" for line in removed)]
            found.append(f"{kind}: {', '.join(moves)}")
    for name in sorted(set(locked.requirements) | set(wanted.requirements)):
        if name not in locked.requirements:
            found.append(f"{name} is new")
        elif name not in wanted.requirements:
            found.append(f"{name} is no longer installed")
        elif locked.requirements[name] != wanted.requirements[name]:
            found.append(f"{name}'s requirements.txt changed")
    return found


@dataclass(frozen=True)
class LockEntry:
    """One distribution of a lock: ``name==version ; marker`` (its hashes are uv's to check)."""

    name: str  # canonical
    version: str
    marker: Marker | None


def entries(lock_text: str) -> list[LockEntry]:
    """The distributions a lock lists, in its order: its lines that start a requirement."""
    found = []
    for line in lock_text.splitlines():
        if line and not line.startswith((" ", "#")):
            requirement = Requirement(line.removesuffix(" \\"))
            (specifier,) = requirement.specifier
            found.append(
                LockEntry(
                    canonicalize_name(requirement.name), specifier.version, requirement.marker
                )
            )
    return found


def marker_environment(python: Iterable[int], machine: str) -> dict[str, str]:
    """PEP 508 marker values of a Linux CPython pod (the host fact's python and machine)."""
    version = [str(part) for part in python]
    return {
        "python_version": ".".join(version[:2]),
        "python_full_version": ".".join(version),
        "platform_machine": machine,
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }


def marked(body: str, target: Target) -> str:
    """uv's answer for one target, each entry marked with the target (one lock, all pods)."""
    lines = []
    for line in body.splitlines():
        if line and not line.startswith((" ", "#")):
            requirement, continued = line.removesuffix(" \\"), line.endswith(" \\")
            name, _, marker = requirement.partition(" ; ")
            both = f"({marker}) and {target.marker}" if marker else target.marker
            line = f"{name} ; {both}" + (" \\" if continued else "")
        lines.append(line)
    return "\n".join(lines) + "\n"


def for_pod(lock_text: str, python: Iterable[int], machine: str) -> list[LockEntry]:
    """The entries a pod with this Python and machine installs (markers evaluated); empty
    when no target of the lock is this pod's."""
    environment = marker_environment(python, machine)
    return [
        entry
        for entry in entries(lock_text)
        if entry.marker is None or entry.marker.evaluate(environment)
    ]


def preferences(lock_text: str, target: Target) -> str:
    """The present lock's versions for one target, ``name==version`` a line: what a re-lock
    hands uv as its output file, whose pins uv keeps where they still fit. So an index
    that changes its past (a mirror catching up, a release dated before its upload) moves
    nothing until `stack lock --upgrade` asks it to."""
    python = tuple(int(part) for part in target.python.split("."))
    return "".join(f"{e.name}=={e.version}\n" for e in for_pod(lock_text, python, target.machine))


def drift(wanted: Mapping[str, str], installed: Mapping[str, str]) -> list[str]:
    """How a venv differs from what it should hold exactly: missing, other versions, extra."""
    have = {canonicalize_name(name): version for name, version in installed.items()}
    want = {canonicalize_name(name): version for name, version in wanted.items()}
    found = []
    for name, version in sorted(want.items()):
        if name not in have:
            found.append(f"{name} missing")
        elif not version_matches(have[name], version):
            found.append(f"{name} {have[name]} (wanted {version})")
    found += [f"{name} {have[name]} not in the lock" for name in sorted(set(have) - set(want))]
    return found


def holds(installed: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    """Whether a venv has every wanted distribution at its version (extras aside)."""
    have = {canonicalize_name(name): version for name, version in installed.items()}
    return all(
        canonicalize_name(name) in have and version_matches(have[canonicalize_name(name)], version)
        for name, version in wanted.items()
    )


def moved(before: str, after: str) -> list[str]:
    """What a re-lock moved, for people: ``imageio 2.38.1 -> 2.38.2``, new and dropped ones."""
    old, new = _versions(before), _versions(after)
    found = []
    for name in sorted(set(old) | set(new)):
        if name not in old:
            found.append(f"{name} {'/'.join(new[name])} (new)")
        elif name not in new:
            found.append(f"{name} {'/'.join(old[name])} (dropped)")
        elif old[name] != new[name]:
            found.append(f"{name} {'/'.join(old[name])} -> {'/'.join(new[name])}")
    return found


def _versions(lock_text: str) -> dict[str, list[str]]:
    """name -> its versions across the lock's targets, sorted."""
    found: dict[str, set[str]] = {}
    for entry in entries(lock_text):
        found.setdefault(entry.name, set()).add(entry.version)
    return {name: sorted(versions) for name, versions in found.items()}


def sync_text(lock_text: str, beside: Iterable[str]) -> str:
    """What `uv pip sync` installs: the lock and the wheels no index serves (podforge's own;
    the wheelhouse's, by their hashed lines), so sync keeps them too."""
    return lock_text + "\n# Installed beside the lock:\n" + "".join(f"{line}\n" for line in beside)


# What `uv pip sync` leaves in a venv though no lock names it (uv calls them seed packages).
SEED_PACKAGES = ("pip", "setuptools", "wheel")


def seeds_to_remove(installed: Mapping[str, str], present: Iterable[str]) -> list[str]:
    """The seed packages among ``present`` (a venv's distributions) that the lock lacks."""
    names = {canonicalize_name(name) for name in present}
    return [seed for seed in SEED_PACKAGES if seed in names and seed not in installed]


def uv_command(venv: str, cache_dir: str) -> str:
    """The venv's uv, as every pod-side run calls it: its environment and the pod's cache."""
    environment = " ".join(
        [*(f"{key}={value}" for key, value in UV_ENVIRONMENT.items()), f"UV_CACHE_DIR={cache_dir}"]
    )
    return f"{environment} {venv}/bin/uv"


def sync_commands(
    venv: str,
    cache_dir: str,
    sync_file: str,
    installed: Mapping[str, str],
    seeds: Iterable[str],
    uv_from: str | None = None,
    dropped: Iterable[str] = (),
) -> list[str]:
    """Shell commands making ``venv`` hold exactly ``sync_file`` (``installed``: what that
    file installs on this machine, name -> version; ``seeds``: seed packages to remove, which
    sync keeps), bytecode compiled, from uv's cache, by the uv of ``uv_from`` (a venv; by
    default ``venv``'s own). ``dropped``: distributions the lock's overrides removed, which
    uv's check (it knows no overrides) finds missing: only that is let pass."""
    uv = f"{uv_command(uv_from or venv, cache_dir)} pip"
    target = f"--python {venv}/bin/python"
    return [
        # Without bytecode ComfyUI's first start takes twice as long (docs/facts.md#comfyui).
        f"{uv} sync {target} --compile-bytecode {sync_file}",
        *(f"{uv} uninstall {target} {seed}" for seed in seeds),
        # Several distributions ship `cv2` (at one version: `stack lock` checks); the one the
        # plan names is installed again last, so its files are the ones on disk (out of the
        # cache: --reinstall would download it again).
        *(
            f"{uv} uninstall {target} --quiet {decision.winner} && {uv} install {target}"
            f" --quiet --no-deps --compile-bytecode {decision.winner}=={decision.version}"
            for decision in shared_import_winners(installed)
        ),
        check_command(f"{uv} check {target}", dropped),
    ]


def check_command(check: str, dropped: Iterable[str]) -> str:
    """``check`` (uv pip check), passing where every incompatibility it finds is a dropped
    distribution's absence (``The package `mmpose` requires `chumpy`, but it's not
    installed``); its lines are printed either way."""
    names = sorted(canonicalize_name(name) for name in dropped)
    if not names:
        return check
    expected = "|".join(re.escape(name) for name in names)
    unexpected = (
        "grep -v -E -e '^(Using Python|Checked |Found [0-9]+ incompatibilit)'"
        f" -e 'requires `({expected})`, but it.s not installed'"
    )
    return (
        f'if found=$({check} 2>&1); then echo "$found"; else echo "$found";'
        f' ! echo "$found" | {unexpected} | grep -q .; fi'
    )
