"""Where an output lands in the bucket: the key layout, and the next free name. Pure.

A fleet writes into one bucket, and ComfyUI numbers its files per instance
(``ComfyUI_00001_.png`` on every pod), so a key names the pod and the day of the file's first
upload: ``outputs/<pod>/<day>/<path under the watched dir>``. An edit keeps its key (the
journal remembers it), so a file that changes after midnight stays where it was.
"""

from __future__ import annotations

import posixpath
import re
import string

from podforge.core.errors import PodforgeError

DEFAULT_LAYOUT = "outputs/{pod}/{day}/{path}"
# The old layout, before keys named the pod: its objects stay where they are.
OLD_LAYOUT = "outputs/{day}/{path}"
FIELDS = frozenset({"pod", "day", "path"})
# Each pod's list of what it uploaded on a day, beside the outputs (only that pod writes it).
INDEX_NAME = "metadata.json"
_POD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_PLAIN = re.compile(r"^[A-Za-z0-9._/{}-]+$")


class LayoutError(PodforgeError, ValueError):
    """A key layout podforge cannot use; says what it needs."""


def check_layout(layout: str) -> str:
    """``layout`` if it names {pod}, {day} and {path}, each once, and nothing else."""
    if not _PLAIN.match(layout) or layout.startswith("/"):
        raise LayoutError("expected a relative key of A-Z a-z 0-9 . _ / - and {pod} {day} {path}")
    named = [name for _, name, _, _ in string.Formatter().parse(layout) if name is not None]
    if sorted(named) != sorted(FIELDS) or not layout.endswith("{path}"):
        raise LayoutError(
            "expected {pod}, {day} and {path} once each, ending in {path}"
            " (keys without the pod collide across a fleet)"
        )
    return layout


def pod_part(name: str) -> str:
    """A pod's name or id as a key's part: runs of anything but A-Z a-z 0-9 . _ - become one
    ``-`` (RunPod's pod names are free text: "ComfyUI pod #2" -> ComfyUI-pod-2)."""
    part = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:64]
    if not _POD.match(part):
        raise LayoutError(f"{name!r} leaves nothing to name the pod by: give it a plain name")
    return part


def object_key(layout: str, pod: str, day: str, path: str) -> str:
    """The key of ``path`` (relative to the watched dir, posix) uploaded by ``pod`` on ``day``."""
    return layout.format(pod=pod, day=day, path=path)


def index_key(layout: str, pod: str, day: str) -> str:
    """Where ``pod`` lists what it uploaded on ``day``."""
    return object_key(layout, pod, day, INDEX_NAME)


def numbered(key: str, number: int) -> str:
    """The ``number``-th name for a key another writer holds: ``a/b (2).png``, as a file
    manager names a copy (the extension kept, so the file still opens)."""
    directory, name = posixpath.split(key)
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem:
        stem, extension = name, ""
    renamed = f"{stem} ({number}).{extension}" if extension else f"{stem} ({number})"
    return posixpath.join(directory, renamed)
