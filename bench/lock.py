"""`podforge stack lock` against pip's resolution of the same set. Prints figures and ratios.

    .venv/bin/python -m bench.lock

The default profile with the pins' requirement files (the mirror of shared/upstream):
uv's hashed resolution for every target (what `stack lock` writes: 3 Pythons, in parallel)
with an empty cache and then with its cache warm, against `pip install --dry-run --report`
of the same pins, tools, requirement files and constraints for this machine's Python alone:
reading wheel metadata by HTTP range (fast-deps, what `podforge stack check` did before the
lock) and plainly (pip then downloads the wheels it considers). Target: >= 10x.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from podforge.controller import stack
from podforge.controller.upstream import requirement_texts
from podforge.core.config import Settings
from podforge.core.lock import entries, lock_inputs, lock_pins
from podforge.core.stacks import DEFAULT_STACK, STACK_PROFILES


def timed_uv(texts: dict[str, str | None], cache: Path) -> tuple[float, int]:
    os.environ["UV_CACHE_DIR"] = str(cache)
    inputs = lock_inputs(STACK_PROFILES[DEFAULT_STACK], texts)
    began = time.monotonic()
    body = stack.resolve(inputs, texts)
    return time.monotonic() - began, len(entries(body))


def timed_pip(texts: dict[str, str | None], work: Path, fast_deps: bool) -> tuple[float, int]:
    inputs = lock_inputs(STACK_PROFILES[DEFAULT_STACK], texts)
    args = []
    for name, text in texts.items():
        if text is not None:
            (work / f"{name}.txt").write_text(text)
            args += ["-r", str(work / f"{name}.txt")]
    (work / "constraints.txt").write_text("\n".join(inputs.constraints) + "\n")
    report = work / "report.json"
    argv = [
        sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
        "--disable-pip-version-check", "--no-cache-dir", "--report", str(report),
        *(["--use-feature=fast-deps"] if fast_deps else []),
        "-c", str(work / "constraints.txt"), *args, *inputs.pins, *inputs.tools,
    ]  # fmt: skip
    began = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True)
    seconds = time.monotonic() - began
    return seconds, len(json.loads(report.read_text())["install"])


def main() -> None:
    texts = requirement_texts(lock_pins(Settings()))
    with tempfile.TemporaryDirectory(prefix="bench-lock-") as tmp:
        cold, count = timed_uv(texts, Path(tmp) / "uv-cache")
        warm, _ = timed_uv(texts, Path(tmp) / "uv-cache")
        print(f"uv (stack lock, 3 targets): {cold:.1f} s with an empty cache, {warm:.1f} s warm;")
        print(f"  {count} entries")
        for fast_deps in (True, False):
            seconds, distributions = timed_pip(texts, Path(tmp), fast_deps)
            how = "fast-deps" if fast_deps else "plain"
            print(
                f"pip --dry-run --report ({how}, this machine's Python alone): {seconds:.1f} s;"
                f" {distributions} distributions; pip / uv: {seconds / cold:.1f}x (uv's cache"
                f" empty), {seconds / warm:.1f}x (warm); target >= 10x"
            )


if __name__ == "__main__":
    main()
