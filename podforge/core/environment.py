"""One resolved environment, decided before anything is installed. Pure: no I/O.

The stack profile's pins and constraints bound ComfyUI's, every node's and podforge's own
requirements; uv's resolver answers whether that resolves (podforge/controller/stack.py asks it).
This module turns its answers into decisions and into messages that name the node:
- ``pin_conflicts``: a requirement that contradicts an exact pin, before uv is even asked;
- ``explain_uv_conflict``: uv's "No solution found", each requirement traced to who asked;
- ``shared_import_winners``: which distribution provides ``cv2`` / ``onnxruntime`` when
  several would, decided here rather than by install order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, ConfigDict

from podforge.core.stacks import SHARED_IMPORTS

PROFILE_SOURCE = "stack profile"


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


def explain_uv_conflict(
    uv_output: str,
    sources: Mapping[str, Sequence[Requirement]],
    profile: str,
    constraints: Sequence[str],
) -> str:
    """uv's "No solution found", with each requirement it names traced to who asked (the
    sources, or the profile's ``constraints``)."""
    causes = [
        line.strip().removeprefix("cause: ")
        for line in uv_output.splitlines()
        if line.strip() and not line.startswith(("warning:", "hint:"))
    ]
    text = " ".join(causes)
    askers = [
        f"{source} requires {requirement}"
        for source, requirements in sources.items()
        for requirement in requirements
        if str(requirement) in text
    ]
    askers += [
        f"the {PROFILE_SOURCE} {profile} constrains {line}" for line in constraints if line in text
    ]
    asked = f" (asked: {'; '.join(askers)})" if askers else ""
    return f"the environment does not resolve: {text}{asked}"


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
