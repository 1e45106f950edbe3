"""Where a model file comes from: one schema for the catalog, ``custom_models`` and the
fetch manifest.

An entry names exactly one source:

- Hugging Face: ``repo`` and ``path`` (and ``revision``, default ``main``);
- CivitAI: ``civitai``, a model version id, and ``file``, the file's name when the version
  has several (default: its primary file); CivitAI's API gives the size and the SHA256;
- any URL: ``url`` (https://; plain http only to this machine), with ``sha256`` and
  ``bytes`` when known. Without a sha256 the file is checked by size only and stamped with
  the sha256 computed while downloading; the plan warns that it is unverified.

``bytes`` and ``sha256``, when given, are checked before a file is published.
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

SourceKind = Literal["huggingface", "civitai", "url"]
SHA256 = re.compile(r"[0-9a-f]{64}")  # a sha256 as hex, lower-case
# Plain http is for a server on this machine (a mirror, the sandbox), never the internet.
_LOOPBACK = re.compile(r"^(localhost|127(\.\d{1,3}){3}|\[::1\])$")


# owner/name, or a name alone (the oldest repos: gpt2).
_HF_REPO = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_PLAIN = re.compile(r"^[^\x00-\x20\x7f\\]{1,1024}$")
_NAMED = re.compile(r"^[^\x00-\x1f\x7f\\]{1,1024}$")
# What no URL podforge passes on may hold: it would end a line, a word or a quote.
_URL_UNSAFE = re.compile(r"[\x00-\x20\x7f\"'`<>\\{}|^]")


def without_secrets(url: str) -> str:
    """A URL for people: without its query, fragment and user info (any may hold a token)."""
    base = url.split("?", 1)[0].split("#", 1)[0]
    scheme, separator, rest = base.partition("://")
    if not separator:
        return base
    host, slash, path = rest.partition("/")
    return f"{scheme}://{host.rpartition('@')[2]}{slash}{path}"


def check_url(value: str, schemes: tuple[str, ...] = ("https",)) -> str:
    """``value`` if it is a URL of ``schemes`` (plain http only to this machine) without a
    character that could end a line, a word or a quote; ValueError saying what is expected."""
    parts = urllib.parse.urlsplit(value)
    loopback = parts.scheme == "http" and _LOOPBACK.match(parts.hostname or "")
    wanted = " or ".join(f"{scheme}://" for scheme in schemes)
    if _URL_UNSAFE.search(value):
        raise ValueError(f"expected an {wanted} URL without spaces, quotes or control characters")
    if parts.scheme == "file" and "file" in schemes:
        return value
    if not (parts.scheme in schemes or loopback) or not parts.hostname:
        raise ValueError(f"expected an {wanted} URL (plain http only to localhost)")
    return value


class ModelSource(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Hugging Face
    repo: str | None = None
    path: str | None = None  # inside the repo
    revision: str = "main"
    # CivitAI
    civitai: Annotated[StrictInt, Field(ge=1)] | None = None  # a model version id
    file: str | None = None  # the file's name, when the version has several
    # Any URL
    url: str | None = None

    bytes: Annotated[StrictInt, Field(ge=0)] | None = None  # exact size, checked
    sha256: str | None = None  # checked

    @field_validator("sha256", mode="before")
    @classmethod
    def _lower_sha256(cls, value: object) -> object:
        # CivitAI publishes SHA256 in upper case; one spelling everywhere after this.
        if isinstance(value, str):
            value = value.lower()
            if not SHA256.fullmatch(value):
                raise ValueError("expected a sha256: 64 hexadecimal digits")
        return value

    @field_validator("repo")
    @classmethod
    def _check_repo(cls, value: str | None) -> str | None:
        if value is not None and not _HF_REPO.match(value):
            raise ValueError("expected a Hugging Face repo id: owner/name of A-Z a-z 0-9 . _ -")
        return value

    @field_validator("revision", "path", "file")
    @classmethod
    def _check_plain(cls, value: str | None, info: ValidationInfo) -> str | None:
        # They end up in a URL's path (quoted) and in messages.
        spaced = info.field_name != "revision"  # file names may hold spaces, branches not
        if value is not None and not (_NAMED if spaced else _PLAIN).match(value):
            raise ValueError("expected text without control characters or backslashes")
        return value

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        return value if value is None else check_url(value)

    @model_validator(mode="after")
    def _one_source(self) -> ModelSource:
        named = [
            kind
            for kind, given in (
                ("repo and path", self.repo is not None or self.path is not None),
                ("civitai", self.civitai is not None),
                ("url", self.url is not None),
            )
            if given
        ]
        if len(named) != 1:
            found = f" (found {' and '.join(named)})" if named else ""
            raise ValueError(
                "name one source: repo and path (Hugging Face), civitai (a CivitAI model "
                f"version id) or url{found}"
            )
        if named == ["repo and path"] and not (self.repo and self.path):
            raise ValueError("a Hugging Face file needs both repo and path")
        if self.file is not None and self.civitai is None:
            raise ValueError("file names a file of a CivitAI model version: set civitai too")
        return self

    @property
    def kind(self) -> SourceKind:
        if self.civitai is not None:
            return "civitai"
        return "url" if self.url is not None else "huggingface"

    @property
    def source_id(self) -> str:
        """What a verification stamp records: a file from another source is not current."""
        if self.kind == "civitai":
            return f"civitai:{self.civitai}:{self.file or ''}"
        if self.kind == "url":
            # Hashed: a URL may carry a signature or a token in its query.
            return "url:" + hashlib.sha256(str(self.url).encode()).hexdigest()[:16]
        return f"hf:{self.repo}@{self.revision}:{self.path}"

    @property
    def label(self) -> str:
        """The source for people: never a URL's query (it may hold a token)."""
        if self.kind == "civitai":
            named = f", {self.file}" if self.file else ""
            return f"CivitAI model version {self.civitai}{named}"
        if self.kind == "url":
            return without_secrets(str(self.url))
        return f"{self.repo}/{self.path}"
