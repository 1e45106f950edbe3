"""The model-file fact: one command for any number of files, judging stamps like the fetcher."""

from __future__ import annotations

import os
import subprocess

from facts.models import ModelFiles
from podforge import stamps


def _run(dests: list[str]) -> list[dict]:
    command = ModelFiles().command(dests)
    output = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True)
    return ModelFiles().process(output.stdout.splitlines())


def test_missing_unstamped_stamped_and_changed_files(tmp_path):
    missing, unstamped, stamped, changed = (str(tmp_path / n) for n in "abcd")
    for path in (unstamped, stamped, changed):
        with open(path, "wb") as out:
            out.write(b"x" * 10)
    stamps.write_stamp(stamped, "f" * 64)
    stamps.write_stamp(changed, "e" * 64)
    with open(changed, "ab") as out:
        out.write(b"more")
    statuses = {s["dest"]: s for s in _run([missing, unstamped, stamped, changed])}
    assert statuses[missing] == {"dest": missing, "size": None, "sha256": None}
    assert statuses[unstamped]["sha256"] is None
    assert statuses[stamped] == {"dest": stamped, "size": 10, "sha256": "f" * 64}
    assert statuses[changed] == {"dest": changed, "size": 14, "sha256": None}
    assert stamps.is_current(statuses[stamped], 10, "f" * 64)
    assert not stamps.is_current(statuses[stamped], 11, None)
    assert not stamps.is_current(statuses[stamped], None, "0" * 64)


def test_a_touched_file_loses_its_stamp(tmp_path):
    path = str(tmp_path / "model.safetensors")
    with open(path, "wb") as out:
        out.write(b"weights")
    stamps.write_stamp(path, "a" * 64)
    os.utime(path, ns=(1, 1))
    (status,) = _run([path])
    assert status["sha256"] is None


def test_one_command_whatever_the_number_of_files(tmp_path):
    five = ModelFiles().command([str(tmp_path / f"f{i}") for i in range(5)])
    fifty = ModelFiles().command([str(tmp_path / f"f{i}") for i in range(50)])
    assert isinstance(five, str) and isinstance(fifty, str)
    assert len(_run([str(tmp_path / f"f{i}") for i in range(50)])) == 50
