"""Files and directories judged by one batched fact (FileDigests), not a fact per path."""

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


@operation()
def content(
    dest: str, text: str | bytes, digests: dict[str, Any], mode: str = "644"
) -> Generator[Any, None, None]:
    """
    Write ``text`` to ``dest`` unless the file there already has that content and mode.

    + digests: the FileDigests fact, read once for every file the deploy writes

    .. code:: python

        content(name="The pod's plan", dest="/opt/podforge/plan.json",
                text=plan_json, digests=digests)
    """
    data = text.encode() if isinstance(text, str) else text
    present = digests["files"].get(dest)
    wanted = hashlib.sha1(data).hexdigest()
    if present is not None and present["sha1"] == wanted and present["mode"] == mode:
        host.noop(f"{dest} is up to date")
        return
    yield StringCommand("mkdir", "-p", posixpath.dirname(dest))
    yield FileUploadCommand(
        io.BytesIO(data), dest, remote_temp_filename=host.get_temp_filename(dest)
    )
    yield StringCommand("chmod", mode, dest)


@operation()
def directories(paths: Iterable[str], digests: dict[str, Any]) -> Generator[str, None, None]:
    """
    Create the directories that do not exist yet, in one command.

    .. code:: python

        directories(name="Model directories", paths=[...], digests=digests)
    """
    missing = [path for path in paths if not digests["dirs"].get(path)]
    if not missing:
        host.noop("all directories exist")
        return
    yield "mkdir -p " + " ".join(shlex.quote(path) for path in missing)
