"""Long pod-side commands (fetch, stack install) with their lines shown live."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api.command import StringCommand
from pyinfra.api.exceptions import NestedOperationError


def run_streamed(command: str, failure: str) -> None:
    """Run ``command`` on the host, its lines live under the host's prefix, as they come.

    A fetch of tens of GB or a stack install takes minutes: a plain shell op would stay
    silent until the end. A failure fails the operation without a Python traceback; the
    command's own lines say what failed.
    """
    succeeded, _ = host.run_shell_command(
        StringCommand(command), print_output=True, print_input=False
    )
    if not succeeded:
        raise NestedOperationError(failure)
