"""fleet/report.py: the cause of a pod's failure, read from the lines pyinfra logs."""

from __future__ import annotations

import logging

from pyinfra import logger
from pyinfra.api.util import format_text

from fleet.report import RunCollector


def _log(level: int, host: str, message: str, nested: bool = False) -> None:
    # The prefix exactly as pyinfra's Host.print_prefix builds it (bold name, padding).
    prefix = f"[{format_text(host, bold=True)}] " + ("nested " if nested else "")
    logger.log(level, prefix + format_text(message, "red"))


def test_the_last_specific_error_line_per_host_is_kept_and_generic_ones_are_not():
    collector = RunCollector()
    try:
        _log(logging.ERROR, "pod-a", "podforge fetch: FAILED Wan2.2/x.safetensors: 404")
        _log(logging.ERROR, "pod-a", "Error: executed 0 commands")
        _log(logging.ERROR, "pod-a", "Error in nested operation", nested=True)
        _log(logging.WARNING, "pod-b", "plan: no flash-attn wheel for cp311: xformers only")
        _log(logging.WARNING, "pod-c", "Unexpected error in Python callback: EOFError()")
        logger.error("--> pyinfra error: No hosts remaining!")  # no host prefix
    finally:
        collector.close()
    assert collector.pods["pod-a"].last_error == "podforge fetch: FAILED Wan2.2/x.safetensors: 404"
    assert "pod-b" not in collector.pods  # a warning is not a cause
    assert collector.pods["pod-c"].last_error == "Unexpected error in Python callback: EOFError()"


def test_a_closed_collector_stops_listening():
    collector = RunCollector()
    collector.close()
    _log(logging.ERROR, "pod-a", "late")
    assert "pod-a" not in collector.pods
