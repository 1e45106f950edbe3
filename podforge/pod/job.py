"""`podforge job`: a pod-side command run in the background, started by one deploy step and
awaited by a later one, so the network works while the rest of the deploy installs.

    podforge job start [--after-downloads OTHER] DIR -- ARGV...   detach ``job run``
    podforge job run [--after-downloads OTHER] DIR -- ARGV...     (detached) ARGV, its output
                                        into DIR/log, then DIR/exit
    podforge job wait DIR [--manifest]  DIR/log as it grows, until DIR/exit; exit with its code

A job's directory is its own (the deploy names it with a fresh token), so a job left running
by an interrupted deploy never writes into the next one's. DIR/pid names the process running
ARGV's wrapper; a wrapper gone without DIR/exit (the pod rebooted, a kill) is a failure,
named as such. ``--manifest``: the model manifest the job fetches; ``wait`` then says every
``PROGRESS_EVERY`` seconds how many of its files are in place and when the rest should be.

``--after-downloads OTHER``: ARGV starts once OTHER (a job syncing a venv with uv) has
downloaded what it needs, so the two do not share the link: the stack's wheels first, then
the models, while the stack unpacks and compiles. Once OTHER's log shows uv past its
downloads, or OTHER has ended (or never started, or died).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

PROGRESS_EVERY = 10.0  # seconds between two "still arriving" lines
POLL = 0.2  # seconds between two reads of the log
STARTS_WITHIN = 30.0  # seconds a started job has to write its pid
# What uv prints once its downloads are done: "Prepared 151 packages in 1m 40s" (fetched
# into its cache), or "Installed 3 packages in 4ms" first when its cache had them all.
DOWNLOADS_DONE = (b"Prepared ", b"Installed ")


def start(job: Path, argv: list[str], after_downloads: Path | None = None) -> int:
    job.mkdir(parents=True, exist_ok=True)
    after = ["--after-downloads", str(after_downloads)] if after_downloads else []
    subprocess.Popen(
        [sys.executable, "-m", "podforge", "job", "run", *after, str(job), "--", *argv],
        start_new_session=True,  # outlives the deploy's SSH session
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd="/",
    )
    print(f"job: started {' '.join(argv[:2])} in {job}")
    return 0


def run(job: Path, argv: list[str], after_downloads: Path | None = None) -> int:
    _write(job / "pid", f"{os.getpid()}\n")
    with open(job / "log", "ab") as log:
        if after_downloads is not None:
            log.write(f"job: {argv[0]} starts once {after_downloads} has its downloads\n".encode())
            log.flush()
            _await_downloads(after_downloads)
        try:
            code = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log).returncode
        except OSError as error:
            log.write(f"job: {argv[0]} did not start: {error}\n".encode())
            code = 127
    _write(job / "exit", f"{code}\n")
    return code


def _await_downloads(other: Path) -> None:
    """Until ``other``'s log shows uv past its downloads, or ``other`` ended or never ran."""
    started = time.monotonic()
    while not (other / "exit").exists():
        try:
            lines = (other / "log").read_bytes().splitlines()
        except FileNotFoundError:
            lines = []
        if any(line.startswith(DOWNLOADS_DONE) for line in lines):
            return
        if (other / "pid").exists():
            if not _alive(other / "pid"):
                return
        elif time.monotonic() - started > STARTS_WITHIN:
            return
        time.sleep(POLL)


def _write(path: Path, text: str) -> None:
    """Whole or not at all: a reader never sees half a pid or exit code."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.replace(path)


def _alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


def arrived(manifest: list[dict[str, object]]) -> tuple[int, int, int]:
    """(files in place, bytes in place, bytes planned) of a model manifest, by what is at
    each destination now (the fetcher publishes whole files only)."""
    count, have = 0, 0
    for model in manifest:
        try:
            size = os.stat(str(model["dest"])).st_size
        except OSError:
            continue
        count += 1
        have += size
    planned = sum(int(str(model.get("planned_bytes") or 0)) for model in manifest)
    return count, have, planned


def progress_line(
    in_place: int, total: int, have: int, planned: int, bytes_per_second: float | None
) -> str:
    """``models: 7/18 files in place (3.2/29.0 GB), ETA 2 min`` (no ETA before a rate, nor
    without planned sizes)."""
    line = f"models: {in_place}/{total} files in place ({have / 1e9:.1f}"
    line += f"/{planned / 1e9:.1f} GB)" if planned else " GB)"
    if bytes_per_second and planned > have:
        seconds = (planned - have) / bytes_per_second
        line += f", ETA {seconds / 60:.0f} min" if seconds >= 90 else f", ETA {seconds:.0f} s"
    return line


def wait(job: Path, manifest_file: Path | None) -> int:
    manifest = json.loads(manifest_file.read_text()) if manifest_file else None
    started = time.monotonic()
    first = arrived(manifest)[1] if manifest else 0
    next_progress = started + PROGRESS_EVERY
    offset = 0
    while True:
        done = (job / "exit").exists()  # read before the log: the log is whole after it
        offset = _echo(job / "log", offset)
        if done:
            return int((job / "exit").read_text())
        if not (job / "pid").exists() and time.monotonic() - started > STARTS_WITHIN:
            print(f"job: {job} never started (no pid after {STARTS_WITHIN:.0f} s)", flush=True)
            return 1
        if (job / "pid").exists() and not _alive(job / "pid") and not (job / "exit").exists():
            offset = _echo(job / "log", offset)
            print(f"job: {job} ended without an exit code (killed?): see {job / 'log'}")
            return 1
        now = time.monotonic()
        if manifest is not None and now >= next_progress:
            count, have, planned = arrived(manifest)
            rate = (have - first) / (now - started) if have > first else None
            print(progress_line(count, len(manifest), have, planned, rate), flush=True)
            next_progress = now + PROGRESS_EVERY
        time.sleep(POLL)


def _echo(log: Path, offset: int) -> int:
    """Print the log's whole lines from ``offset``; the offset after them."""
    try:
        with open(log, "rb") as file:
            file.seek(offset)
            data = file.read()
    except FileNotFoundError:
        return offset
    whole = data[: data.rfind(b"\n") + 1]
    if whole:
        sys.stdout.write(whole.decode(errors="replace"))
        sys.stdout.flush()
    return offset + len(whole)


def main(args: argparse.Namespace) -> int:
    job = Path(args.dir)
    if args.job_verb == "wait":
        return wait(job, Path(args.manifest) if args.manifest else None)
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        print("podforge job: no command given after --", file=sys.stderr)
        return 2
    after = Path(args.after_downloads) if args.after_downloads else None
    return start(job, argv, after) if args.job_verb == "start" else run(job, argv, after)
