"""`podforge wheelhouse ensure` with real builds, a real S3 server and real uv.

Two "pods" are two volumes (directories) beside one bucket (the sandbox's S3 behind R2's
gate): the first builds a C extension of our own (tests/data/wheelhouse/ctally, built where
mmcv would take half an hour) and publishes it; the second fetches it and builds nothing;
a wheel changed in the bucket or on a volume is refused; uv installs the line, hash-checked.
A release asset (flash-attn's wheel: here ctally's own) is fetched as it is, checked
against its pin, and shared the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import s3_client
from podforge.controller.stack import uv_binary

SOURCE = Path(__file__).parents[1] / "data" / "wheelhouse" / "ctally"


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What a stack venv is to mmcv: the build's environment (setuptools, no isolation)."""
    where = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([uv_binary(), "venv", "-q", str(where)], check=True)
    subprocess.run(
        [uv_binary(), "pip", "install", "-q", "--python", str(where / "bin/python"),
         "setuptools>=70.1"],
        check=True,
    )  # fmt: skip
    return where


def uv_build(venv: Path, kind: str, source: Path, out: Path) -> tuple[Path, str]:
    """ctally's sdist or wheel (``kind``: sdist, wheel) made by uv with ``venv`` as the build
    environment, and its sha256."""
    subprocess.run(
        [uv_binary(), "build", "-q", f"--{kind}", "--no-build-isolation", "--python",
         str(venv / "bin/python"), "--out-dir", str(out), str(source)],
        check=True,
    )  # fmt: skip
    (made,) = out.glob("*.tar.gz" if kind == "sdist" else "*.whl")
    return made, hashlib.sha256(made.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def release(venv: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A release asset (as flash-attn's): a wheel as its project publishes it, and its sha256
    (built from the sdist: a wheel built in place would leave build/ in the source tree)."""
    out = tmp_path_factory.mktemp("release")
    sdist, _ = uv_build(venv, "sdist", SOURCE, out / "sdist")
    return uv_build(venv, "wheel", sdist, out / "wheel")


@pytest.fixture
def sdist(venv: Path, tmp_path: Path) -> tuple[Path, str]:
    return uv_build(venv, "sdist", SOURCE, tmp_path / "sdist")


def ensure(
    s3: dict[str, Any] | None,
    home: Path,
    venv: Path,
    source: tuple[Path, str | None],
    *extra: str,
) -> subprocess.CompletedProcess[str]:
    """`podforge wheelhouse ensure ctally==1.0` from ``source`` (an sdist or a release
    asset's wheel, and its pinned sha256 or None) for ``venv``, on the volume ``home``."""
    environ = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")}
    if s3 is not None:
        environ |= {
            "R2_ENDPOINT": s3["url"],
            "R2_BUCKET": s3["bucket"],
            "R2_ACCESS_KEY_ID": s3["access_key"],
            "R2_SECRET_ACCESS_KEY": s3["secret_key"],
        }
    return subprocess.run(
        [sys.executable, "-m", "podforge", "wheelhouse", "ensure", "ctally==1.0",
         "--source", f"file://{source[0]}",
         *(("--source-sha256", source[1]) if source[1] else ()),
         "--python", str(venv / "bin/python"), "--home", str(home), "--against", "setuptools",
         *extra],
        env=environ, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def install_and_add(venv: Path, line: str) -> str:
    requirements = venv.parent / "wheelhouse-line.txt"
    requirements.write_text(line + "\n")
    subprocess.run(
        [uv_binary(), "pip", "install", "-q", "--python", str(venv / "bin/python"),
         "--reinstall", "-r", str(requirements)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    added = subprocess.run(
        [str(venv / "bin/python"), "-c", "import ctally; print(ctally.add(2, 40))"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return added.stdout.strip()


def test_a_second_pod_takes_the_first_pods_wheel_from_the_bucket_and_builds_nothing(
    s3, venv, sdist, tmp_path
):
    first = ensure(s3, tmp_path / "pod-a", venv, sdist, "--env", "CTALLY_BUILD=one")
    assert first.returncode == 0, first.stderr
    assert "wheelhouse: building ctally 1.0" in first.stdout
    assert "published wheelhouse/ctally/1.0/" in first.stdout
    line = first.stdout.strip().splitlines()[-1]
    assert line.startswith(f"ctally @ file://{tmp_path / 'pod-a'}/ctally/1.0/cp311-")
    # The second pod could not build: its source is gone. It needs none.
    sdist[0].unlink()
    second = ensure(s3, tmp_path / "pod-b", venv, sdist, "--env", "CTALLY_BUILD=one")
    assert second.returncode == 0, second.stderr
    assert "fetched from the bucket" in second.stdout and "building" not in second.stdout
    their_line = second.stdout.strip().splitlines()[-1]
    digest = line.rsplit("sha256:", 1)[1]
    assert their_line.endswith(f"--hash=sha256:{digest}")
    assert install_and_add(venv, their_line) == "42"
    # Again on the same volume: in place, nothing fetched.
    again = ensure(s3, tmp_path / "pod-b", venv, sdist, "--env", "CTALLY_BUILD=one")
    assert again.returncode == 0 and "is on the volume" in again.stdout
    assert again.stdout.strip().splitlines()[-1] == their_line


def test_a_wheel_changed_in_the_bucket_is_refused_and_nothing_is_filed(s3, venv, sdist, tmp_path):
    first = ensure(s3, tmp_path / "pod-a", venv, sdist, "--env", "CTALLY_BUILD=two")
    assert first.returncode == 0, first.stderr
    key = next(
        o["Key"]
        for o in s3_client(s3).list_objects_v2(Bucket=s3["bucket"], Prefix="wheelhouse/")[
            "Contents"
        ]
        if o["Key"].endswith(".whl") and "ctally/1.0/" in o["Key"] and _label_of(first) in o["Key"]
    )
    s3_client(s3).put_object(Bucket=s3["bucket"], Key=key, Body=b"not the wheel that was built")
    second = ensure(s3, tmp_path / "pod-b", venv, sdist, "--env", "CTALLY_BUILD=two")
    assert second.returncode == 1
    assert f"{key} in the bucket has sha256" in second.stderr and "refused" in second.stderr
    assert not list((tmp_path / "pod-b").rglob("*.whl"))


def test_an_entry_in_the_bucket_naming_another_place_is_refused_and_nothing_is_written(
    s3, venv, release, tmp_path
):
    first = ensure(s3, tmp_path / "pod-a", venv, release, "--env", "CASE=escape")
    assert first.returncode == 0, first.stderr
    label = _label_of(first)
    entry_key = f"wheelhouse/ctally/1.0/{label}/entry.json"
    client = s3_client(s3)
    entry = json.loads(client.get_object(Bucket=s3["bucket"], Key=entry_key)["Body"].read())
    client.put_object(
        Bucket=s3["bucket"], Key=entry_key,
        Body=json.dumps({**entry, "label": "../../../escaped"}).encode(),
    )  # fmt: skip
    second = ensure(s3, tmp_path / "pods" / "b", venv, release, "--env", "CASE=escape")
    assert second.returncode == 1 and "describes ctally/1.0/../../../escaped" in second.stderr
    assert not list(tmp_path.rglob("escaped*")) and not list((tmp_path / "pods").rglob("*.whl"))


def test_a_wheel_changed_on_the_volume_is_refused_naming_it_and_the_fix(venv, sdist, tmp_path):
    home = tmp_path / "pod-a"
    first = ensure(None, home, venv, sdist, "--env", "CTALLY_BUILD=three")
    assert first.returncode == 0, first.stderr
    assert "none on the volume (no bucket)" in first.stdout
    (wheel,) = home.rglob("*.whl")
    wheel.write_bytes(wheel.read_bytes() + b"\0")
    again = ensure(None, home, venv, sdist, "--env", "CTALLY_BUILD=three")
    assert again.returncode == 1
    assert f"{wheel} has sha256" in again.stderr and f"delete {wheel.parent}" in again.stderr


def test_another_build_variable_is_another_key_and_a_pinned_hash_refuses_others(
    venv, sdist, tmp_path
):
    home = tmp_path / "pod-a"
    cpu = ensure(None, home, venv, sdist)
    arch = ensure(None, home, venv, sdist, "--env", "TORCH_CUDA_ARCH_LIST=8.0;8.6")
    assert cpu.returncode == 0 and arch.returncode == 0, cpu.stderr + arch.stderr
    assert "-cpu-" in cpu.stdout and "-sm80.86-" in arch.stdout and "building" in arch.stdout
    pinned = ensure(None, home, venv, sdist, "--sha256", "0" * 64)
    assert pinned.returncode == 1 and "the stack pins 0000" in pinned.stderr


def test_uv_refuses_the_line_when_the_wheel_is_not_the_one_hashed(venv, sdist, tmp_path):
    made = ensure(None, tmp_path / "pod-a", venv, sdist, "--env", "CTALLY_BUILD=four")
    assert made.returncode == 0, made.stderr
    line = made.stdout.strip().splitlines()[-1]
    forged = line.rsplit("sha256:", 1)[0] + "sha256:" + "f" * 64
    with pytest.raises(subprocess.CalledProcessError) as refused:
        install_and_add(venv, forged)
    assert "hash" in refused.value.stderr.lower()


def test_a_release_asset_is_fetched_once_checked_and_taken_from_the_bucket_after(
    s3, venv, release, tmp_path
):
    first = ensure(s3, tmp_path / "pod-a", venv, release)
    assert first.returncode == 0, first.stderr
    assert "wheelhouse: fetching ctally 1.0" in first.stdout and "building" not in first.stdout
    line = first.stdout.strip().splitlines()[-1]
    assert "-prebuilt-" in line and line.endswith(f"--hash=sha256:{release[1]}")
    second = ensure(s3, tmp_path / "pod-b", venv, release)
    assert second.returncode == 0, second.stderr
    assert "fetched from the bucket" in second.stdout and "fetching" not in second.stdout
    assert install_and_add(venv, second.stdout.strip().splitlines()[-1]) == "42"
    # A pod pinning another hash takes nothing the fleet holds under that key.
    other = ensure(s3, tmp_path / "pod-c", venv, (release[0], "0" * 64))
    assert other.returncode == 1 and "the stack pins 0000" in other.stderr


def test_a_release_asset_that_is_not_the_pinned_file_is_refused_and_nothing_filed(
    venv, release, tmp_path
):
    home = tmp_path / "pod-a"
    refused = ensure(None, home, venv, (release[0], "0" * 64))
    assert refused.returncode == 1
    assert f"has sha256 {release[1]}, expected {'0' * 64}: refused" in refused.stderr
    assert not list(home.rglob("*.whl"))


def test_an_unpinned_release_asset_is_held_to_its_first_fetchs_hash(venv, release, tmp_path):
    home = tmp_path / "pod-a"
    first = ensure(None, home, venv, (release[0], None))
    assert first.returncode == 0, first.stderr
    assert f"no sha256 is pinned for {release[0].name}" in first.stdout
    assert first.stdout.strip().endswith(f"--hash=sha256:{release[1]}")
    # The asset changes upstream: the volume keeps the first one, and says so.
    original = release[0].read_bytes()
    try:
        release[0].write_bytes(original + b"\0")
        again = ensure(None, home, venv, (release[0], None))
    finally:
        release[0].write_bytes(original)
    assert again.returncode == 0 and "is on the volume" in again.stdout
    assert again.stdout.strip().endswith(f"--hash=sha256:{release[1]}")


def _label_of(done: subprocess.CompletedProcess[str]) -> str:
    return done.stdout.strip().splitlines()[-1].split("/ctally/1.0/", 1)[1].split("/", 1)[0]
