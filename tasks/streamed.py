"""Pod-side commands (fetch, the stack sync, workflows, verify) with their lines shown live."""

from __future__ import annotations

from collections.abc import Callable

from pyinfra import host, logger
from pyinfra.api.command import StringCommand
from pyinfra.api.exceptions import NestedOperationError


def run_streamed(
    command: str, failure: str, on_success: Callable[[list[str]], None] | None = None
) -> None:
    """Run ``command`` on the host, its lines live under the host's prefix, as they come.

    A fetch of tens of GB or a stack sync takes minutes: a plain shell op would stay
    silent until the end. A failure fails the operation without a Python traceback; the
    command's own lines say what failed. ``on_success`` gets the lines of a run that worked.
    """
    succeeded, output = host.run_shell_command(
        StringCommand(command), print_output=True, print_input=False
    )
    if not succeeded:
        # The last line the command printed is usually its own reason: the run's report
        # (fleet/report.py) shows it as the pod's cause.
        last = output.output_lines[-1].strip() if output.output_lines else "no output"
        host.log_styled(f"{failure} ({last})", fg="red", log_func=logger.error)
        raise NestedOperationError(failure)
    if on_success is not None:
        on_success(output.output_lines)
