"""`podforge r2sync`: the command (``--once``, ``--test``, ``--list``, or the daemon that
watches until SIGTERM)."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

from podforge.core.gpu import PROBE_COMMAND, GpuProbeError, parse_probe
from podforge.pod.r2sync.index import listed_outputs
from podforge.pod.r2sync.journal import Journal
from podforge.pod.r2sync.settings import Fatal, SyncError, pod_identity, r2_settings
from podforge.pod.r2sync.store import Retry, Store, make_client, round_trip
from podforge.pod.r2sync.uploader import Syncer
from podforge.pod.r2sync.watcher import RESCAN_SECONDS, Wakeup


def _gpu_name() -> str:
    """The first GPU's name, as podforge's GPU probe reads it; "none" without one."""
    probe = subprocess.run(["sh", "-c", PROBE_COMMAND], capture_output=True, text=True)
    try:
        devices = parse_probe(probe.stdout.splitlines()).devices
    except GpuProbeError:
        return "unknown"
    return devices[0].name if devices else "none"


def _say(line: str) -> None:
    print(line, flush=True)


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    try:
        settings = r2_settings(environ)
        pod = pod_identity(environ, settings)
    except Fatal as error:
        print(f"podforge r2sync: {error}", file=sys.stderr)
        return 2
    # The daemon rides out outages; --once and --test answer within a bounded time.
    budget = 10.0 if args.test else 30.0 if args.once else None
    retry = Retry(
        settings.bucket, budget, stopping, lambda line: print(line, file=sys.stderr, flush=True)
    )
    store = Store(make_client(settings), settings.bucket, retry)
    if args.list:
        try:
            for entry in listed_outputs(store, args.day):
                print(f"{entry['key']} {entry['size']} {entry['sha256']} {entry.get('pod', '-')}")
        except SyncError as error:
            print(f"podforge r2sync --list: FAILED: {error}", file=sys.stderr)
            return 1
        return 0
    if args.test:
        try:
            round_trip(store)
        except SyncError as error:
            print(f"podforge r2sync --test: FAILED: {error}", file=sys.stderr)
            return 1
        print(
            f"r2sync --test: put, head, get and delete work "
            f"on {settings.endpoint}, bucket {settings.bucket}"
        )
        return 0
    watch = [Path(directory).resolve() for directory in args.watch]
    for directory in watch:
        directory.mkdir(parents=True, exist_ok=True)
    journal_path = (
        Path(args.journal) if args.journal else watch[0].parent / ".podforge-r2sync.sqlite"
    )
    syncer = Syncer(
        settings=settings,
        store=store,
        journal=Journal(journal_path),
        watch=watch,
        settle=args.settle,
        stopping=stopping,
        journal_path=journal_path.resolve(),
        pod=pod,
        gpu=_gpu_name(),
        say=_say,
    )
    try:
        if args.once:
            return _once(syncer)
        return _daemon(syncer, stopping)
    except Fatal as error:
        print(f"podforge r2sync: {error}", file=sys.stderr)
        return 2


def _once(syncer: Syncer) -> int:
    ready, unfinished = syncer.pending()
    failures = syncer.sync(ready)
    for path, cause in sorted(failures.items()):
        print(f"podforge r2sync: FAILED {path}: {cause}", file=sys.stderr)
    print(
        f"r2sync: {len(ready) - len(failures)} uploaded, {len(failures)} failed, "
        f"{unfinished} not finished yet (left for later)"
    )
    return 1 if failures else 0


def _daemon(syncer: Syncer, stopping: threading.Event) -> int:
    wakeup = Wakeup(syncer.watch)
    how = (
        f"a rescan every {RESCAN_SECONDS:.0f} s ({wakeup.unavailable})"
        if wakeup.unavailable
        else "inotify"
    )
    _say(
        f"r2sync: watching {', '.join(map(str, syncer.watch))} ({how}) -> {syncer.settings.bucket}"
    )
    while not stopping.is_set():
        ready, unfinished = syncer.pending()
        # Every round, even with nothing ready: entries a kill left unlisted get listed.
        for path, cause in sorted(syncer.sync(ready).items()):
            print(f"podforge r2sync: FAILED {path}: {cause} (retried next round)", file=sys.stderr)
        # Unfinished files settle by time alone: look again within the settle period.
        wait = min(RESCAN_SECONDS, syncer.settle) if unfinished else RESCAN_SECONDS
        wakeup.wait(wait)
    _say("r2sync: stopped (SIGTERM); unfinished uploads resume at the next start")
    return 0
