"""Model-fetch benchmark on the sandbox hub (not part of the test run). Prints figures.

    .venv/bin/python -m bench.models [--total-mib 1024] [--skip-noop]

(a) aggregate throughput of the fetcher vs curl on the same files (ratio, target >= 0.9),
(b) bytes transferred after killing the fetcher at ~50 % of a large file (target <= 0.55),
(c) wall time and remote command count of a no-op deploy with 5 vs 50 model files
    (target: equal command counts), against sandbox pods,
(d) one 1 GiB file at a plain URL, every connection capped (20 MiB/s, a CDN's per-connection
    limit): the fetcher's 16 connections against ``aria2c -x16 -s16`` (Debian's aria2) and
    one curl stream (target >= 0.9x aria2c).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.counting import counted_commands
from podforge.core.catalog import CATALOG
from sandbox import control
from sandbox.hub import plain_key

REPO = Path(__file__).resolve().parent.parent
MIB = 2**20


def _post(url: str, body: dict) -> None:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    urllib.request.urlopen(request).read()


def throughput(base: Path, total_mib: int, throttle_mib: int = 0, rounds: int = 5) -> None:
    """curl vs the fetcher on the same files; throttle_mib caps each response like a CDN.

    Each timed run starts from an empty output dir with dirty pages flushed (``sync``), and
    the order rotates per round, so no tool pays for another's disk writeback.
    """
    files = [(e.repo, e.path) for e in CATALOG[:4]]
    each = total_mib // len(files) * MIB
    (base / "logs").mkdir(parents=True)
    hub = control.start_hub(base, base / "logs", 64 * 1024, {p: each for _, p in files}, None, [])
    out = base / "out"
    manifest_file = base / "manifest.json"
    manifest_file.write_text(
        json.dumps([{"repo": r, "path": p, "dest": str(out / Path(p).name)} for r, p in files])
    )
    env = dict(os.environ, HF_ENDPOINT=hub["url"], PYTHONPATH=str(REPO))
    urls = [f"{hub['url']}/{repo}/resolve/main/{path}" for repo, path in files]
    commands = {
        "curl": [["curl", "-sSf", "-o", str(out / f"curl-{i}"), url] for i, url in enumerate(urls)],
        # What curl needs to match the fetcher's guarantee: the sha256 of what it wrote.
        "curl+sha256sum": [
            [
                "sh",
                "-c",
                f'curl -sSf -o "$1" {url} && sha256sum "$1" >"$1.sha256"',
                "sh",
                str(out / f"v-{i}"),
            ]
            for i, url in enumerate(urls)
        ],
        "podforge": [[sys.executable, "-m", "podforge", "fetch", str(manifest_file)]],
    }
    seconds: dict[str, list[float]] = {tool: [] for tool in commands}
    try:
        _post(hub["url"] + "/_control/faults", {"throttle_bps": throttle_mib * MIB})
        for round_ in range(rounds):
            order = list(commands)[round_ % 3 :] + list(commands)[: round_ % 3]
            for tool in order:
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir()
                os.sync()
                began = time.monotonic()
                procs = [
                    subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL)
                    for argv in commands[tool]
                ]
                if any(p.wait() for p in procs):
                    raise SystemExit(f"{tool} failed")
                seconds[tool].append(time.monotonic() - began)
    finally:
        control.stop_process(hub["pid"])
    total = each * len(files) / MIB
    median = {tool: statistics.median(times) for tool, times in seconds.items()}
    link = f"{throttle_mib} MiB/s per connection" if throttle_mib else "unthrottled loopback"
    print(
        f"(a) {total:.0f} MiB in {len(files)} files, {link}, median of {rounds}: "
        + ", ".join(f"{tool} {total / s:.0f} MiB/s" for tool, s in median.items())
        + f" -> ratio {median['curl'] / median['podforge']:.2f}x curl (target >= 0.9), "
        f"{median['curl+sha256sum'] / median['podforge']:.2f}x curl+sha256sum"
    )


def resume(base: Path, size_mib: int) -> None:
    entry = CATALOG[0]
    size = size_mib * MIB
    (base / "logs").mkdir(parents=True)
    hub = control.start_hub(base, base / "logs", 64 * 1024, {entry.path: size}, None, [])
    try:
        dest = base / "models" / Path(entry.path).name
        manifest_file = base / "manifest.json"
        manifest_file.write_text(
            json.dumps([{"repo": entry.repo, "path": entry.path, "dest": str(dest)}])
        )
        record = dest.with_name(dest.name + ".partial.ranges")
        # 16 connections at 16 MiB/s each: slow enough to stop near the middle.
        _post(hub["url"] + "/_control/faults", {"throttle_bps": 16 * MIB})
        env = dict(os.environ, HF_ENDPOINT=hub["url"], PYTHONPATH=str(REPO))
        argv = [sys.executable, "-m", "podforge", "fetch", str(manifest_file)]
        first = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL)
        while _missing(record, size) > size // 2:
            time.sleep(0.01)
        first.send_signal(signal.SIGKILL)
        first.wait()
        kept = size - _missing(record, size)
        _post(hub["url"] + "/_control/faults", {})
        _post(hub["url"] + "/_control/log/clear", {})
        subprocess.run(
            argv, env=env, check=True, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        log = json.load(urllib.request.urlopen(hub["url"] + "/_control/log"))
        # The bytes the re-run asked for (its ranges, overlapping where an idle connection
        # took half of a piece in progress, counted once); a piece cut short sends less.
        asked = sorted(
            (int(first), int(last))
            for entry in log
            if entry["method"] == "GET" and entry["range"]
            for first, _, last in [entry["range"].removeprefix("bytes=").partition("-")]
            if last and (first, last) != ("0", "0")
        )
        moved, reach = 0, -1
        for first, last in asked:
            moved += max(0, last - max(first, reach + 1) + 1)
            reach = max(reach, last)
        print(
            f"(b) killed with {kept / size:.0%} of {size_mib} MiB written (16 connections); "
            f"the re-run asked for {moved / MIB:.0f} MiB -> {moved / size:.2f} of the file "
            "(target <= 0.55)"
        )
    finally:
        control.stop_process(hub["pid"])


def _missing(record: Path, size: int) -> int:
    """Bytes a ranged download's record says are still missing (all, before it exists)."""
    try:
        return sum(end - next_ for _, next_, end in json.loads(record.read_text())["ranges"])
    except (FileNotFoundError, ValueError):
        return size


def connections(base: Path, size_mib: int, cap_mib: int, rounds: int = 3) -> None:
    """One file over many capped connections: podforge vs aria2c -x16 -s16 vs curl."""
    if shutil.which("aria2c") is None:
        raise SystemExit("bench.models (d) needs aria2c: apt-get install aria2 (bin/setup does)")
    name = "sandbox_big.bin"
    size = size_mib * MIB
    (base / "logs").mkdir(parents=True)
    hub = control.start_hub(base, base / "logs", 64 * 1024, {plain_key(name): size}, None, [])
    url = f"{hub['url']}/files/{name}"
    out = base / "out"
    manifest_file = base / "manifest.json"
    manifest_file.write_text(json.dumps([{"url": url, "dest": str(out / name)}]))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    commands = {
        "podforge": [sys.executable, "-m", "podforge", "fetch", str(manifest_file)],
        "aria2c": [
            *("aria2c", "-x16", "-s16", "-d", str(out), "-o", f"aria2-{name}"),
            *("--console-log-level=warn", "--summary-interval=0", "--allow-overwrite=true"),
            url,
        ],
        "curl": ["curl", "-sSf", "-o", str(out / f"curl-{name}"), url],
    }
    seconds: dict[str, list[float]] = {tool: [] for tool in commands}
    try:
        _post(hub["url"] + "/_control/faults", {"throttle_bps": cap_mib * MIB})
        for round_ in range(rounds):
            for tool, argv in commands.items():
                if tool == "curl" and round_:
                    continue  # one stream at the cap: its time is size / cap, once is enough
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir()
                os.sync()
                began = time.monotonic()
                subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
                seconds[tool].append(time.monotonic() - began)
    finally:
        control.stop_process(hub["pid"])
    median = {tool: statistics.median(times) for tool, times in seconds.items()}
    print(
        f"(d) {size_mib} MiB at one URL, {cap_mib} MiB/s per connection, median of {rounds}: "
        + ", ".join(f"{tool} {size_mib / s:.0f} MiB/s ({s:.1f} s)" for tool, s in median.items())
        + f" -> podforge {median['aria2c'] / median['podforge']:.2f}x aria2c (target >= 0.9), "
        f"{median['curl'] / median['podforge']:.1f}x curl; podforge also checked its sha256"
    )


def noop_deploy(base: Path) -> None:
    from sandbox.converge import converge

    os.environ["PODFORGE_SANDBOX_DIR"] = str(base)
    control.up(["rtx-4090"], base, first_address=80)
    try:
        for count in (5, 50):
            files = [e for e in CATALOG if e.variant is None][:10]
            custom = [
                {
                    "repo": files[i % len(files)].repo,
                    "path": files[i % len(files)].path,
                    "dest": f"custom/{i}-{Path(files[i % len(files)].path).name}",
                }
                for i in range(count)
            ]
            data = {"custom_models": custom}
            converge(data=data)  # fetch them
            with counted_commands() as counted:
                began = time.monotonic()
                results = converge(data=data)
                wall = time.monotonic() - began
            changed = sum(len(r.changed) for r in results.values())
            print(
                f"(c) no-op deploy with {count} model files: {wall:.1f} s, "
                f"{counted['n']} remote commands, {changed} changes"
            )
    finally:
        control.down(base)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.models")
    parser.add_argument("--total-mib", type=int, default=1024)
    parser.add_argument("--resume-mib", type=int, default=512)
    parser.add_argument("--skip-noop", action="store_true")
    parser.add_argument("--connections-mib", type=int, default=1024)
    parser.add_argument("--cap-mib", type=int, default=20, help="per-connection cap for (d)")
    parser.add_argument("--only-connections", action="store_true", help="run (d) alone")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(
        dir=REPO / ".sandbox" if (REPO / ".sandbox").exists() else None
    ) as tmp:
        connections(Path(tmp) / "d", args.connections_mib, args.cap_mib)
        if args.only_connections:
            return
        throughput(Path(tmp) / "a", args.total_mib)
        throughput(Path(tmp) / "a2", args.total_mib, throttle_mib=100)
        resume(Path(tmp) / "b", args.resume_mib)
        if not args.skip_noop:
            noop_deploy(Path(tmp) / "c")


if __name__ == "__main__":
    main()
