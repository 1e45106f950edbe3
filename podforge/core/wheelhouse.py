"""The wheelhouse: wheels no index serves (mmcv built from its sdist, flash-attn's release
assets), each filed under what it was built against and named by its sha256 (data, no I/O).

A compiled wheel fits only the environment it was built for: the Python, the machine, the
exact torch it compiled against, and the GPU architectures its kernels carry (or none: a
CPU-ops build). ``BuildKey`` is that environment; its ``label`` is the directory the wheel
lives in, on the volume (``/workspace/.cache/podforge/wheelhouse``) and under
``wheelhouse/`` in the fleet's bucket, so a pod or image build that made a wheel once serves
every other pod with the same key. Each wheel's ``entry.json`` records its sha256; a wheel
whose bytes differ from it is refused, and the sync line hands the hash to uv, which checks
it again (docs/stack-and-locks.md#the-wheelhouse).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from packaging.utils import canonicalize_name

from podforge.core.errors import PodforgeError
from podforge.core.sources import SHA256

BUCKET_PREFIX = "wheelhouse/"
ENTRY = "entry.json"
# What a key's parts may hold: they become directory names and object keys.
_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+]*$")
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_DISTRIBUTION = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")  # PEP 508's names
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
# name-version(-build)?-python-abi-platform.whl; its version may carry a local label (+cu12...).
WHEEL_FILE_NAME = re.compile(
    r"^[A-Za-z0-9_.]+-[A-Za-z0-9_.+!]+(-[0-9][A-Za-z0-9_.]*)?(-[A-Za-z0-9_.]+){3}\.whl$"
)


class WheelhouseError(PodforgeError, ValueError):
    """A wheel that cannot be used or made; the message names it and the fix."""


def _checked(what: str, value: str) -> str:
    if not _PART.fullmatch(value) or ".." in value:
        raise WheelhouseError(
            f"{what} {value!r} is not accepted: expected letters, digits and . _ + only"
        )
    return value


@dataclass(frozen=True)
class BuildKey:
    """What a built wheel is bound to. ``against``: the distributions it compiled against,
    name -> version, read from the venv it was built in (torch); ``environment``: the build's
    variables (MMCV_WITH_OPS, TORCH_CUDA_ARCH_LIST), which change what is compiled."""

    python: str  # the interpreter's tag: cp311
    machine: str  # x86_64, aarch64
    against: tuple[tuple[str, str], ...]
    environment: tuple[tuple[str, str], ...]
    prebuilt: bool = False  # a release asset, fetched as its project built it

    @classmethod
    def of(
        cls,
        python: str,
        machine: str,
        against: Mapping[str, str],
        environment: Mapping[str, str],
        prebuilt: bool = False,
    ) -> BuildKey:
        for name, value in environment.items():
            if not _ENV_NAME.fullmatch(name):
                raise WheelhouseError(f"build variable {name!r} is not accepted: A-Z, 0-9, _")
            if "\n" in value or "\x00" in value:
                raise WheelhouseError(f"build variable {name} holds a line break")
        return cls(
            python=_checked("the Python tag", python),
            machine=_checked("the machine", machine),
            against=tuple(
                sorted(
                    (
                        _checked("a distribution", str(canonicalize_name(name))),
                        _checked(f"{name}'s version", version),
                    )
                    for name, version in against.items()
                )
            ),  # fmt: skip
            environment=tuple(sorted(environment.items())),
            prebuilt=prebuilt,
        )

    @property
    def kernels(self) -> str:
        """The GPU architectures compiled in (``sm80.86.90``), ``cpu``, or ``prebuilt`` (what
        its project compiled in: its file name says)."""
        if self.prebuilt:
            return "prebuilt"
        arch_list = dict(self.environment).get("TORCH_CUDA_ARCH_LIST", "")
        numbers = [a.replace(".", "") for a in re.split(r"[;\s]+", arch_list) if a]
        return ("sm" + ".".join(numbers)) if numbers else "cpu"

    @property
    def label(self) -> str:
        """Readable, and exact: the build variables enter as a short digest of them all."""
        digest = hashlib.sha256(json.dumps(self.environment).encode()).hexdigest()[:8]
        against = [f"{name}{version}" for name, version in self.against]
        return "-".join([self.python, self.machine, *against, self.kernels, digest])


@dataclass(frozen=True)
class WheelSpec:
    """A wheel to have when neither the volume nor the bucket holds it: built from its sdist
    (``source``, a URL, and that file's sha256), or, when ``source`` is a wheel (a release
    asset: flash-attn's), fetched as it is. Only a release asset may come unpinned
    (``source_sha256`` None): its first fetch's sha256 is then what the wheelhouse records
    and every later install is checked against."""

    name: str
    version: str
    source: str
    source_sha256: str | None

    def __post_init__(self) -> None:
        if not _DISTRIBUTION.fullmatch(self.name):
            raise WheelhouseError(
                f"the distribution {self.name!r} is not accepted: letters, digits and . _ - only"
            )
        _checked("the version", self.version)
        if not self.source.startswith(("https://", "file:///")):
            raise WheelhouseError(
                f"{self.name}'s source {self.source!r} is not accepted: an https:// or file:/// URL"
            )
        if self.source_sha256 is None and not self.prebuilt:
            raise WheelhouseError(
                f"{self.name}'s source {self.source_name} is an sdist: its sha256 must be pinned"
            )
        if self.source_sha256 is not None and not SHA256.fullmatch(self.source_sha256):
            raise WheelhouseError(f"{self.name}'s source sha256 is not 64 hex digits")
        if not _FILE_NAME.fullmatch(self.source_name):
            raise WheelhouseError(
                f"{self.name}'s source {self.source!r} does not end in a file name"
                " (letters, digits and . _ + - only)"
            )

    @property
    def source_name(self) -> str:
        """The source's file name (a wheel's carries its tags: it is kept as it is)."""
        return self.source.rsplit("/", 1)[1]

    @property
    def prebuilt(self) -> bool:
        return self.source.endswith(".whl")


@dataclass(frozen=True)
class WheelEntry:
    """A wheel in the wheelhouse: its file name and the sha256 of its bytes."""

    name: str
    version: str
    label: str
    wheel: str
    sha256: str

    def __post_init__(self) -> None:
        if not (self.wheel.endswith(".whl") and "/" not in self.wheel) or ".." in self.wheel:
            raise WheelhouseError(f"{self.wheel!r} is not a wheel's file name")
        if not SHA256.fullmatch(self.sha256):
            raise WheelhouseError(f"the sha256 recorded for {self.wheel} is not 64 hex digits")

    @property
    def directory(self) -> str:
        """Relative to the wheelhouse (the volume's directory, or the bucket's prefix)."""
        return entry_directory(self.name, self.version, self.label)

    def to_json(self) -> str:
        fields = {"name": self.name, "version": self.version, "label": self.label}
        return json.dumps({**fields, "wheel": self.wheel, "sha256": self.sha256}, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> WheelEntry:
        try:
            data = json.loads(text)
            return cls(**{field: str(data[field]) for field in cls.__dataclass_fields__})
        except (ValueError, KeyError, TypeError) as error:
            raise WheelhouseError(
                f"{where} is not a wheelhouse entry ({error}): delete it to build or fetch again"
            ) from None

    def sync_line(self, home: str) -> str:
        """The line `uv pip sync` installs it by, hash-checked, from the volume."""
        path = f"{home}/{self.directory}/{self.wheel}"
        return f"{self.name} @ file://{path} --hash=sha256:{self.sha256}"


def entry_directory(name: str, version: str, label: str) -> str:
    return f"{canonicalize_name(name)}/{version}/{label}"
