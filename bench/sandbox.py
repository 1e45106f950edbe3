"""A sandbox of its own for one benchmark run, in a temporary dir, torn down afterwards."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sandbox import control


@contextmanager
def bench_sandbox(
    name: str, gpus: list[str], first_address: int, **up: Any
) -> Iterator[dict[str, Any]]:
    """Pods (one per GPU profile) on 127.0.0.{first_address}.., the hub, S3 and git; the
    state. ``up``: further arguments of sandbox.control.up (file sizes, Xet)."""
    with tempfile.TemporaryDirectory(prefix=f"podforge-bench-{name}-") as tmp:
        os.environ["PODFORGE_SANDBOX_DIR"] = tmp
        state = control.up(gpus, Path(tmp), first_address=first_address, **up)
        try:
            yield state
        finally:
            control.down(Path(tmp))
