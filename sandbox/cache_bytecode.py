"""Byte-compile the unpacked wheels of a uv cache in place, run by the pods' own Python.

uv installs a wheel by hardlinking its unpacked files out of the cache, ``__pycache__``
included. With the bytecode already beside each source (the same inode, so the same mtime
and size in the pyc's header), a pod's ``uv pip sync --compile-bytecode`` finds it current
and writes nothing: the pods run the deploy's exact command, and the sandbox compiles a
stack once per machine instead of once per pod and stack switch (~40 CPU-seconds each).

Usage: python3 sandbox/cache_bytecode.py ARCHIVE_DIR   (the cache's ``archive-v0``)

Standard library only: it runs under the pods' interpreter (Debian's python3), whose magic
number the bytecode must carry.
"""

from __future__ import annotations

import compileall
import py_compile
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from py_compile import PycInvalidationMode


def sources(archive_dir: Path) -> list[str]:
    """Every module a venv imports from the cache's wheels. A wheel's ``*.data`` tree is
    left out: uv moves its files elsewhere at install (and refuses a ``__pycache__`` among
    its scripts)."""
    found = []
    for entry in sorted(archive_dir.iterdir()):
        for path in entry.rglob("*.py"):
            if not path.relative_to(entry).parts[0].endswith(".data"):
                found.append(str(path))
    return found


def compile_source(path: str) -> bool:
    """Whether ``path`` has current bytecode now: False for a source that is not valid
    Python; any other failure (a write refused) raises."""
    # compile_file skips a source whose pyc is current; timestamp pycs, as uv writes them.
    if compileall.compile_file(path, quiet=2, invalidation_mode=PycInvalidationMode.TIMESTAMP):
        return True
    # compile_file reports every failure alike: again, so only a syntax error is let pass.
    try:
        py_compile.compile(path, doraise=True, invalidation_mode=PycInvalidationMode.TIMESTAMP)
    except py_compile.PyCompileError:
        return False
    return True


def main(archive_dir: str) -> None:
    files = sources(Path(archive_dir))
    with ProcessPoolExecutor() as pool:
        compiled = list(pool.map(compile_source, files, chunksize=256))
    failed = [path for path, ok in zip(files, compiled, strict=True) if not ok]
    current = len(files) - len(failed)
    line = f"sandbox: bytecode in {archive_dir} for {current} of {len(files)} modules"
    if failed:
        # Test data written in another syntax (mediapipe's, Python 2 leftovers): uv's own
        # compile passes over them as well, and no import reads them.
        line += f"; {len(failed)} not valid Python 3.11, left without (e.g. {failed[0]})"
    print(line, file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1])
