"""Count the remote commands a deploy runs (every fact and operation command goes through
``Host.run_shell_command``; file uploads do not)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pyinfra.api.host as pyinfra_host


@contextmanager
def counted_commands() -> Iterator[dict[str, int]]:
    counter = {"n": 0}
    original = pyinfra_host.Host.run_shell_command

    def counting(self: object, *args: object, **kwargs: object) -> object:
        counter["n"] += 1
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    pyinfra_host.Host.run_shell_command = counting  # type: ignore[method-assign]
    try:
        yield counter
    finally:
        pyinfra_host.Host.run_shell_command = original  # type: ignore[method-assign]
