"""The one reader of secrets, for every entry point (the deploy, `podforge fetch`, r2sync,
the RunPod inventory): a secret is the environment variable NAME, or the content of the file
NAME_FILE names. Such a file must be readable by its owner alone (0600, 0400): the tokens
the deploy hands to the pod's programs are written so, and one someone else can read is
refused, naming the file and the fix, rather than trusted. Standard library only (r2sync and
the fetcher start without pydantic)."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from podforge.core.errors import PodforgeError


class SecretFileError(PodforgeError, ValueError):
    """A secret's file that cannot be read or is readable by others; names it and the fix."""


def secret_file(path: str | Path, name: str) -> str:
    """The content of ``path`` (the file ``name`` names), stripped; refused when the group
    or others may read it."""
    try:
        mode = os.stat(path).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SecretFileError(
                f"{name} {path} is readable by others (mode {stat.S_IMODE(mode):04o}): it holds"
                f" a secret, so it must be 0600 (chmod 600 {path})"
            )
        return Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as error:
        why = error.strerror if isinstance(error, OSError) else "it is not text"
        raise SecretFileError(f"{name} {path} cannot be read: {why}") from None


def env_file(path: str | Path, name: str) -> dict[str, str]:
    """``KEY=VALUE`` lines (``export`` and quotes allowed, ``#`` comments) of a 0600 file."""
    values = {}
    for line in secret_file(path, name).splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.removeprefix("export ").split("=", 1)
        values[key.strip()] = value.strip().strip("'\"")
    return values


def secret(name: str, environ: Mapping[str, str]) -> str | None:
    """NAME, or the content of the 0600 file NAME_FILE names; None when neither is set."""
    path = environ.get(f"{name}_FILE")
    if path:
        return secret_file(path, f"{name}_FILE") or None
    return environ.get(name) or None


def with_secret_files(environ: Mapping[str, str], names: frozenset[str]) -> dict[str, str]:
    """The environment with each of ``names`` read from its NAME_FILE where that is set."""
    found = dict(environ)
    for name in names:
        value = secret(name, environ)
        if value is not None:
            found[name] = value
    return found
