"""The one rule for every path a pod writes under a directory it was given. Pure: no I/O.

A model's place is the models dir joined with a *relative* path whose segments are each a
real name: never empty, ``.`` or ``..``, never absolute, at most 255 bytes, without control
characters. A backslash is read as the separator Windows users write (``wan\\x.safetensors``)
and then judged like any other, so ``..\\..\\etc`` climbs nowhere. Subfolders stay legal
(``diffusion_models/wan/x.safetensors``), as ComfyUI allows them. Workflow needs, the catalog,
``custom_models`` and the fetch manifest all pass through here; the pod-side fetcher checks
again before it opens anything (and follows symlinks: podforge/pod/fetch.py).

Settings' own paths (where the venv, ComfyUI and podforge's files live) are absolute POSIX
paths of a plain alphabet (``setting_path``): they reach shell commands, unit files and
nginx's config, where a space, a quote or a ``;`` would mean something else.
"""

from __future__ import annotations

import posixpath
import re

from podforge.core.errors import PodforgeError

MAX_SEGMENT_BYTES = 255  # NAME_MAX of ext4, xfs and overlayfs
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Absolute, and only characters that mean nothing to a shell, a unit file or nginx.
_SETTING_PATH = re.compile(r"^/[A-Za-z0-9._+@=/-]*$")


class PathError(PodforgeError, ValueError):
    """A path that would leave its directory or cannot be a file name; says why."""


def relative_path(value: object) -> str:
    """``value`` as a path under some directory (``/``-separated, normalised), or
    PathError saying why it cannot be one."""
    if not isinstance(value, str) or not value:
        raise PathError("expected a relative path such as loras/style.safetensors")
    if _CONTROL.search(value):
        raise PathError("a path cannot hold control characters (NUL, line breaks, ...)")
    text = value.replace("\\", "/")
    if text.startswith("/"):
        raise PathError("an absolute path leaves the models dir: give it relative to it")
    segments = text.split("/")
    for segment in segments:
        if segment in ("", ".", ".."):
            raise PathError(f"a path's parts cannot be empty, '.' or '..' (got {_shown(value)})")
        if len(segment.encode()) > MAX_SEGMENT_BYTES:
            raise PathError(f"a file name is longer than {MAX_SEGMENT_BYTES} bytes")
    return "/".join(segments)


def inside(directory: str, relative: object) -> str:
    """``directory`` joined with ``relative`` (checked by ``relative_path``)."""
    return posixpath.join(directory, relative_path(relative))


def within(directory: str, path: str) -> bool:
    """Whether the normalised ``path`` is ``directory`` itself or below it (lexically:
    the fetcher resolves symlinks before asking)."""
    base = posixpath.normpath(directory)
    return posixpath.commonpath([base, posixpath.normpath(path)]) == base


def setting_path(value: object) -> str:
    """A directory or file a setting names on the pod: absolute, normalised, plain."""
    if not isinstance(value, str) or not _SETTING_PATH.match(value):
        raise PathError(
            "expected an absolute path of letters, digits and . _ + @ = / - (it reaches shell"
            " commands and config files)"
        )
    if posixpath.normpath(value) != value.rstrip("/") or "/../" in f"{value}/":
        raise PathError("expected a normalised path: no '..', '.' or doubled '/'")
    return value.rstrip("/") or "/"


def _shown(value: str) -> str:
    """A hostile value in a message: quoted, its control characters escaped, and short."""
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."
