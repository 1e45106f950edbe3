"""Files and directories judged by one batched fact (PodState["files"]), not a fact per path."""

from __future__ import annotations

import hashlib
import io
import posixpath
import shlex
from collections.abc import Generator, Iterable
from typing import Any

from pyinfra import host
from pyinfra.api import operation
from pyinfra.api.command import FileUploadCommand, StringCommand


def is_current(digests: dict[str, Any], dest: str, text: str | bytes, mode: str = "644") -> bool:
    """Whether the pod-state fact's files show ``dest`` with exactly this content and mode."""
    data = text.encode() if isinstance(text, str) else text
    present = digests["files"].get(dest)
    return (
        present is not None
        and present["sha1"] == hashlib.sha1(data).hexdigest()
        and present["mode"] == mode
    )


@operation()
def content(
    dest: str,
    text: str | bytes,
    digests: dict[str, Any],
    mode: str = "644",
    group: str | None = None,
) -> Generator[Any, None, None]:
    """
    Write ``text`` to ``dest`` unless the file there already has that content and mode.

    + digests: PodState["files"], read once for every file the deploy writes
    + group: the file's group, when a service reads it under its own (set on writing)

    .. code:: python

        content(name="The pod's plan", dest="/opt/podforge/plan.json",
                text=plan_json, digests=digests)
    """
    data = text.encode() if isinstance(text, str) else text
    if is_current(digests, dest, data, mode):
        host.noop(f"{dest} is up to date")
        return
    yield StringCommand("mkdir", "-p", posixpath.dirname(dest))
    yield FileUploadCommand(
        io.BytesIO(data), dest, remote_temp_filename=host.get_temp_filename(dest)
    )
    if group is not None:
        yield StringCommand("chgrp", group, dest)
    yield StringCommand("chmod", mode, dest)


@operation()
def directories(
    paths: Iterable[str], digests: dict[str, Any], modes: dict[str, str] | None = None
) -> Generator[str, None, None]:
    """
    Create the directories that do not exist yet, in one command; set the given modes.

    + modes: path -> mode for directories that must have one (a secrets dir: "700")

    .. code:: python

        directories(name="Model directories", paths=[...], digests=digests)
    """
    modes = modes or {}
    missing = [path for path in paths if not digests["dirs"].get(path)]
    wrong = [path for path, mode in modes.items() if digests["dirs"].get(path) != mode]
    if not missing and not wrong:
        host.noop("all directories exist")
        return
    for mode in sorted({modes[path] for path in wrong}):
        # Made with its mode, so nothing lands in it while it is still open to others.
        group = [shlex.quote(path) for path in wrong if modes[path] == mode]
        yield f"mkdir -p -m {mode} {' '.join(group)} && chmod {mode} {' '.join(group)}"
    plain = [path for path in missing if path not in modes]
    if plain:
        yield "mkdir -p " + " ".join(shlex.quote(path) for path in plain)
