"""One resolved environment, decided before anything is installed. Pure: no I/O.

The stack profile's pins and constraints bound ComfyUI's, every node's and podforge's own
requirements; pip's resolver answers whether that resolves (podforge/stack_cli.py asks it).
This module turns its answers into decisions and into messages that name the node:
- ``pin_conflicts``: a requirement that contradicts an exact pin, before pip is even asked;
- ``explain_conflict``: pip's "conflict is caused by" lines, attributed to nodes;
- ``shared_import_winners``: which distribution provides ``cv2`` / ``onnxruntime`` when
  several would, decided here rather than by install order.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, ConfigDict

from podforge.stacks import MMCV, POD_TOOL_REQUIREMENTS, SHARED_IMPORTS, STACK_PROFILES

if TYPE_CHECKING:
    # Types only: `podforge stack` runs from the image's stack layer with the stack's own
    # modules alone (podforge/image.py), before the rest of podforge is copied in.
    from podforge.config import Settings
    from podforge.plan import Plan

PROFILE_SOURCE = "stack profile"


class StackRequest(BaseModel):
    """What the pod's environment must hold; written by the deploy, read by `podforge stack`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    profile: str
    pins: list[str]  # exact: torch, torchvision, torchaudio, xformers
    constraints: list[str]  # pins + the profile's traps (numpy<2, ...)
    torch_index_url: str | None = None
    flash_attn_wheel: str | None = None  # a release wheel URL; None: xformers only
    sources: dict[str, str]  # who asks -> requirements file on the pod (may be absent)
    tools: list[str]  # podforge's own pod-side requirements
    extra: list[str] = []  # on request: OpenMMLab
    build_from_source: list[str] = []  # built once into the wheelhouse (mmcv)
    wheelhouse: str | None = None
    commits: dict[str, str] = {}  # a new pin means new requirements: resolve again

    def key(self) -> str:
        """Identity of the request: the deploy runs `podforge stack install` when it changes."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def inputs(self, requirement_texts: Mapping[str, str | None]) -> str:
        """What the resolution really depends on: the request without the commits, and the
        requirement files' text. A pin that moves without touching them resolves nothing."""
        payload = {"request": self.model_dump(mode="json", exclude={"commits"})}
        payload["files"] = dict(sorted(requirement_texts.items()))
        canonical = json.dumps(payload, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def requirement_lines(text: str) -> list[Requirement]:
    """The requirements in a requirements.txt; options (-r, --index-url ...) are pip's."""
    found = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        try:
            found.append(Requirement(line))
        except InvalidRequirement:
            continue  # pip reads the file too and says what is wrong with the line
    return found


def pin_conflicts(
    sources: Mapping[str, Sequence[Requirement]], pins: Iterable[str], profile: str
) -> list[str]:
    """One message per requirement that no version allowed by an exact pin satisfies."""
    pinned: dict[str, tuple[Requirement, str]] = {}
    for text in pins:
        pin = Requirement(text)
        version = next(iter(pin.specifier)).version
        pinned[canonicalize_name(pin.name)] = (pin, version)
    problems = []
    for source, requirements in sources.items():
        for requirement in requirements:
            name = canonicalize_name(requirement.name)
            if name not in pinned:
                continue
            pin, version = pinned[name]
            if not requirement.specifier.contains(version, prereleases=True):
                problems.append(
                    f"{source} requires {requirement}, but the {PROFILE_SOURCE} {profile} "
                    f"pins {pin}: change the node's pin or the profile (STACK_PROFILE)"
                )
    return problems


_REQUESTED = re.compile(r"^The user requested (\(constraint\) )?(.+)$")
_DEPENDS = re.compile(r"^(\S+) (\S+) depends on (.+)$")


def explain_conflict(
    pip_output: str, sources: Mapping[str, Sequence[Requirement]], profile: str
) -> str:
    """pip's ResolutionImpossible, with each requirement traced to the node that asked."""
    lines = pip_output.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if "conflict is caused by" in line)
    except StopIteration:
        tail = [line for line in lines if line.strip()][-5:]
        return "pip could not resolve the environment: " + " / ".join(tail)
    causes: list[str] = []
    for line in lines[start + 1 :]:
        line = line.strip()
        if not line:
            break
        requested = _REQUESTED.match(line)
        depends = _DEPENDS.match(line)
        if requested and requested.group(1):
            causes.append(f"the {PROFILE_SOURCE} {profile} constrains {requested.group(2)}")
        elif requested:
            who = _askers(requested.group(2), sources)
            causes.append(f"{who} requires {requested.group(2)}")
        elif depends:
            name, version, needs = depends.groups()
            who = _askers_of(name, sources)
            causes.append(f"{name} {version} (required by {who}) depends on {needs}")
        else:
            causes.append(line)
    return "the environment does not resolve: " + "; ".join(dict.fromkeys(causes))


def _askers(requirement_text: str, sources: Mapping[str, Sequence[Requirement]]) -> str:
    try:
        wanted = Requirement(requirement_text)
    except InvalidRequirement:
        return "a requirement"
    return _askers_of(wanted.name, sources, str(wanted))


def _askers_of(
    name: str, sources: Mapping[str, Sequence[Requirement]], exact: str | None = None
) -> str:
    key = canonicalize_name(name)
    askers = [
        source
        for source, requirements in sources.items()
        if any(
            canonicalize_name(r.name) == key and (exact is None or str(r) == exact)
            for r in requirements
        )
    ]
    return ", ".join(askers) if askers else "a dependency"


class SharedImport(BaseModel):
    """Several distributions provide one import package; the plan names the winner."""

    model_config = ConfigDict(frozen=True)

    module: str
    winner: str
    version: str
    others: list[str]

    def warning(self) -> str:
        return (
            f"{', '.join([self.winner, *self.others])} all provide `{self.module}`: "
            f"{self.winner} {self.version} is installed last so its `{self.module}` is the one "
            "imported (the others stay for their dependents' metadata)"
        )


def shared_import_winners(resolved: Mapping[str, str]) -> list[SharedImport]:
    """For each shared import package provided by two or more resolved distributions."""
    names = {canonicalize_name(name): version for name, version in resolved.items()}
    decisions = []
    for module, preference in SHARED_IMPORTS.items():
        present = [dist for dist in preference if dist in names]
        if len(present) < 2:
            continue
        decisions.append(
            SharedImport(
                module=module, winner=present[0], version=names[present[0]], others=present[1:]
            )
        )
    return decisions


def version_matches(installed: str, wanted: str) -> bool:
    """Installed ``2.5.1+cu124`` is what a lock saying ``2.5.1`` asked for (PEP 440 ==)."""
    try:
        have, want = Version(installed), Version(wanted)
    except InvalidVersion:
        return installed == wanted
    return have == want or (want.local is None and have.public == want.public)


def lock_is_installed(lock: Mapping[str, str], installed: Mapping[str, str]) -> list[str]:
    """Names in the lock whose installed version differs (or that are missing)."""
    have = {canonicalize_name(name): version for name, version in installed.items()}
    return sorted(
        name
        for name, version in lock.items()
        if canonicalize_name(name) not in have
        or not version_matches(have[canonicalize_name(name)], version)
    )


def stack_request(settings: Settings, plan: Plan) -> StackRequest:
    """The request the deploy writes for this pod: its profile, the nodes' files, podforge."""
    profile = STACK_PROFILES[plan.python_stack.profile]
    checkouts = settings.checkouts()
    sources = {pin.name: f"{dest}/requirements.txt" for dest, pin in checkouts.items()}
    openmmlab = plan.python_stack.openmmlab
    return StackRequest(
        profile=profile.name,
        pins=list(profile.pins),
        constraints=[*profile.pins, *profile.constraints],
        torch_index_url=profile.torch_index_url,
        flash_attn_wheel=plan.python_stack.flash_attn_wheel,
        sources=sources,
        tools=list(POD_TOOL_REQUIREMENTS),
        extra=openmmlab,
        build_from_source=[MMCV] if MMCV in openmmlab else [],
        wheelhouse=settings.wheelhouse_dir if openmmlab else None,
        commits={pin.name: pin.commit for pin in checkouts.values()},
    )
