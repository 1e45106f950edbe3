"""r2sync upload throughput against `rclone copy` of the same files to the same S3 server.

    .venv/bin/python -m bench.r2sync [--total-mib 1024] [--rounds 3]

The outputs: one 300 MiB video and 50 MiB files up to the total. Both tools upload to
`rclone serve s3` directly (not through the sandbox's checking gate, a Python proxy that
would cap both), each round from a fresh journal and an emptied bucket, alternating order;
the median of the rounds is printed with the ratio (target >= 0.8x rclone; seed > 10 MB/s).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sandbox import control

MIB = 2**20


def _outputs(directory: Path, total_mib: int) -> int:
    sizes = [300]
    while sum(sizes) + 50 <= total_mib:
        sizes.append(50)
    for i, size in enumerate(sizes):
        path = directory / ("video.mp4" if i == 0 else f"frames/{i:03d}.png")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as out:
            for _ in range(size):
                out.write(os.urandom(MIB))
        old = time.time() - 60
        os.utime(path, (old, old))
    return sum(sizes) * MIB


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.r2sync")
    parser.add_argument("--total-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="podforge-bench-r2-") as tmp:
        base = Path(tmp)
        (base / "logs").mkdir()
        s3 = control.start_s3(base, base / "logs")
        try:
            outputs = base / "outputs"
            total = _outputs(outputs, args.total_mib)
            files = sum(1 for p in outputs.rglob("*") if p.is_file())
            rclone = str(Path(sys.executable).parent / "rclone")
            env = dict(
                os.environ,
                R2_ENDPOINT=s3["rclone_url"],
                R2_BUCKET=s3["bucket"],
                R2_ACCESS_KEY_ID=s3["access_key"],
                R2_SECRET_ACCESS_KEY=s3["secret_key"],
                RCLONE_CONFIG="/dev/null",
                RCLONE_CONFIG_BENCH_TYPE="s3",
                RCLONE_CONFIG_BENCH_PROVIDER="Other",
                RCLONE_CONFIG_BENCH_ENDPOINT=s3["rclone_url"],
                RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=s3["access_key"],
                RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=s3["secret_key"],
            )
            commands = {
                # Each round to its own prefix: nothing is deleted under the running server.
                "rclone copy": [rclone, "copy", str(outputs), f"bench:{s3['bucket']}/rclone-{{}}"],
                "r2sync --once": [
                    sys.executable,
                    "-m",
                    "podforge",
                    "r2sync",
                    "--watch",
                    str(outputs),
                    "--journal",
                    str(base / "journal.sqlite"),
                    "--once",
                ],
            }
            times: dict[str, list[float]] = {name: [] for name in commands}
            for round_number in range(args.rounds):
                order = list(commands)[:: 1 if round_number % 2 == 0 else -1]
                for name in order:
                    # A fresh journal: r2sync uploads everything again (same keys, overwritten).
                    for suffix in ("", "-wal", "-shm"):
                        Path(f"{base / 'journal.sqlite'}{suffix}").unlink(missing_ok=True)
                    subprocess.run(["sync"], check=True)
                    began = time.monotonic()
                    argv = [part.format(round_number) for part in commands[name]]
                    done = subprocess.run(argv, env=env, capture_output=True, text=True)
                    if done.returncode != 0:
                        raise SystemExit(f"{name} failed: {done.stderr.strip()[-2000:]}")
                    times[name].append(time.monotonic() - began)
            print(f"{files} files, {total / MIB:.0f} MiB (one of 300 MiB), median of {args.rounds}")
            medians = {name: statistics.median(values) for name, values in times.items()}
            for name, seconds in medians.items():
                print(f"  {name:14s} {seconds:6.2f} s  {total / MIB / seconds:7.1f} MiB/s")
            ratio = medians["rclone copy"] / medians["r2sync --once"]
            print(f"r2sync throughput / rclone copy: {ratio:.2f}x (target >= 0.8)")
        finally:
            control.stop_process(s3["gate_pid"])
            control.stop_process(s3["pid"])


if __name__ == "__main__":
    main()
