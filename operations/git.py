"""A git checkout pinned to one commit (pyinfra's git.repo cannot take a sha as branch)."""

from __future__ import annotations

import shlex
from collections.abc import Generator
from typing import Any

from pyinfra import host, logger
from pyinfra.api import operation


@operation()
def pinned_checkout(
    dest: str, url: str, commit: str, present: dict[str, Any] | None
) -> Generator[str, None, None]:
    """
    Check out ``commit`` of ``url`` at ``dest``: fetched alone and shallowly, HEAD detached.

    + present: this checkout as the pod-state fact read it (None: no directory)

    A checkout with local changes (or a directory that is not a checkout) is reported and
    left alone, never wiped. A commit the remote does not have fails the host, naming both.

    .. code:: python

        pinned_checkout(
            name="ComfyUI-GGUF at 795e4515",
            dest="/workspace/ComfyUI/custom_nodes/ComfyUI-GGUF",
            url="https://github.com/city96/ComfyUI-GGUF",
            commit="795e45156ece99afbc3efef911e63fcb46e6a20d",
            present=software["repos"]["/workspace/ComfyUI/custom_nodes/ComfyUI-GGUF"],
        )
    """
    if present is not None and present["head"] == commit:
        host.noop(f"{dest} is at {commit[:12]}")
        return
    if present is not None and (not present["git"] or present["dirty"]):
        why = (
            "is not a git checkout"
            if not present["git"]
            else f"has local changes ({', '.join(present['dirty'][:3])})"
        )
        logger.warning(
            f"{host.print_prefix}{dest} {why}: left alone at "
            f"{(present['head'] or 'no commit')[:12]}, not moved to the pin {commit[:12]}"
        )
        return
    path, remote, sha = shlex.quote(dest), shlex.quote(url), shlex.quote(commit)
    if present is None:
        yield f"mkdir -p {path} && git -C {path} init -q"
        yield f"git -C {path} remote add origin {remote}"
    elif present["url"] != url:
        yield f"git -C {path} remote set-url origin {remote}"
    missing = shlex.quote(f"podforge: {url} has no commit {commit} (or cannot be reached)")
    yield f"git -C {path} fetch -q --depth 1 origin {sha} || {{ echo {missing} >&2; exit 1; }}"
    yield f"git -C {path} -c advice.detachedHead=false checkout -q --detach {sha}"
