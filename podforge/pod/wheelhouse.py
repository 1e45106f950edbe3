"""``podforge wheelhouse ensure``: a wheel no index serves, on this volume, hash-checked.

In order: the volume's wheelhouse already holds it (its bytes still match the sha256 its
entry recorded); else the fleet's bucket does (fetched, checked, then filed on the volume);
else it is made here, once: built from its sdist against the venv it is for (no build
isolation: mmcv's build imports that venv's torch), or, for a release asset (flash-attn's
wheel), fetched as it is; then filed on the volume and published to the bucket for every
other pod. A wheel whose bytes differ from its entry, on the volume or in the bucket, or
from the sha256 pinned for it, is refused, never installed. The line printed (or written
to ``--line-to``) names the wheel with its sha256 for `uv pip sync`, which checks it again.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import ClientError

from podforge.core.errors import PodforgeError
from podforge.core.wheelhouse import (
    BUCKET_PREFIX,
    ENTRY,
    BuildKey,
    WheelEntry,
    WheelhouseError,
    WheelSpec,
    entry_directory,
)
from podforge.pod.r2sync.settings import r2_settings
from podforge.pod.r2sync.store import KeyTaken, Retry, Store, make_client

CHUNK = 1 << 20
# Read in the venv a wheel is for: its interpreter tag, machine and the versions built against.
_KEY_PROBE = """
import importlib.metadata, json, platform, sys
names = sys.argv[1:]
print(json.dumps({
    "python": f"cp{sys.version_info[0]}{sys.version_info[1]}",
    "machine": platform.machine(),
    "against": {n: importlib.metadata.version(n) for n in names},
}))
"""


def venv_key(
    python: str, against: list[str], environment: Mapping[str, str], prebuilt: bool = False
) -> BuildKey:
    """The key of a wheel built with ``python`` (a venv's interpreter) against ``against``
    (``prebuilt``: a release asset, for that venv)."""
    probe = subprocess.run(
        [python, "-c", _KEY_PROBE, *against], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        raise WheelhouseError(f"{python} cannot say what a wheel would be built against: {last}")
    found = json.loads(probe.stdout)
    return BuildKey.of(found["python"], found["machine"], found["against"], environment, prebuilt)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Wheelhouse:
    """The volume's wheelhouse (``home``) and, where R2 is set, the fleet's bucket."""

    home: Path
    store: Store | None
    say: Callable[[str], None] = print

    def ensure(
        self,
        spec: WheelSpec,
        key: BuildKey,
        build: Callable[[Path, Path], Path],
        pinned: str | None = None,
    ) -> WheelEntry:
        """The entry of ``spec`` for ``key``: found, fetched, or made (a release asset as it
        is; an sdist built by ``build(sdist, out_dir) -> wheel``). ``pinned``: the sha256 a
        committed lock names (a release asset's own pin by default); any other wheel is
        refused."""
        directory = entry_directory(spec.name, spec.version, key.label)
        what = f"{spec.name} {spec.version} ({key.label})"
        with self._locked(directory):
            entry = self._on_volume(directory)
            if entry is not None:
                self.say(f"wheelhouse: {what} is on the volume")
            else:
                entry = self._from_bucket(directory)
                if entry is not None:
                    self.say(f"wheelhouse: {what} fetched from the bucket ({entry.sha256[:12]})")
                else:
                    entry = self._build(spec, key, directory, build)
            if spec.prebuilt and pinned is None:
                pinned = spec.source_sha256
            if pinned is not None and entry.sha256 != pinned:
                raise WheelhouseError(
                    f"{directory}/{entry.wheel} has sha256 {entry.sha256}, the stack"
                    f" pins {pinned}: refused; pin the new hash if this wheel is yours"
                )
            return entry

    @contextlib.contextmanager
    def _locked(self, directory: str) -> Iterator[None]:
        """One pod at a time per key on a shared volume (the kernel drops a dead one's lock)."""
        lock = self.home / f"{directory}.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def _on_volume(self, directory: str) -> WheelEntry | None:
        path = self.home / directory / ENTRY
        if not path.exists():
            return None
        entry = _entry_of(directory, path.read_text(), str(path))
        wheel = self.home / directory / entry.wheel
        if not wheel.exists():
            return None  # filed but gone: fetched or built again
        found = sha256_of(wheel)
        if found != entry.sha256:
            raise WheelhouseError(
                f"{wheel} has sha256 {found}, its entry records {entry.sha256}: it"
                f" changed after it was filed and is refused; delete {wheel.parent} to fetch or"
                " build it again"
            )
        return entry

    def _from_bucket(self, directory: str) -> WheelEntry | None:
        if self.store is None:
            return None
        prefix = f"{BUCKET_PREFIX}{directory}"
        text = self._get_text(f"{prefix}/{ENTRY}")
        if text is None:
            return None
        entry = _entry_of(directory, text, f"{prefix}/{ENTRY} in the bucket")
        target = self.home / directory
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target) as staging:
            partial = Path(staging) / entry.wheel
            self._download(f"{prefix}/{entry.wheel}", partial)
            found = sha256_of(partial)
            if found != entry.sha256:
                raise WheelhouseError(
                    f"{prefix}/{entry.wheel} in the bucket has sha256 {found}, its"
                    f" entry records {entry.sha256}: refused (tampered or torn); delete"
                    f" {prefix}/ from the bucket so a pod builds it again"
                )
            self._file(entry, partial)
        return entry

    def _build(
        self, spec: WheelSpec, key: BuildKey, directory: str, build: Callable[[Path, Path], Path]
    ) -> WheelEntry:
        where = "on the volume or in the bucket" if self.store else "on the volume (no bucket)"
        doing, done = ("fetching", "fetched") if spec.prebuilt else ("building", "built")
        self.say(f"wheelhouse: {doing} {spec.name} {spec.version} for {key.label}: none {where}")
        target = self.home / directory
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target) as staging:
            started = time.monotonic()
            source = Path(staging) / spec.source_name
            _download_source(spec, source)
            made = source if spec.prebuilt else build(source, Path(staging) / "out")
            entry = WheelEntry(spec.name, spec.version, key.label, made.name, sha256_of(made))
            self.say(
                f"wheelhouse: {done} {made.name} in {time.monotonic() - started:.0f} s"
                f" ({made.stat().st_size} bytes, sha256 {entry.sha256[:12]})"
            )
            if spec.source_sha256 is None:
                self.say(
                    f"wheelhouse: no sha256 is pinned for {made.name}: this first fetch's"
                    f" ({entry.sha256}) is recorded, and every later install is checked"
                    " against it"
                )
            self._file(entry, made)
        self._publish(entry)
        return entry

    def _file(self, entry: WheelEntry, wheel: Path) -> None:
        """The wheel, then its entry, into place (each by rename: never half a file)."""
        target = self.home / entry.directory
        os.replace(wheel, target / entry.wheel)
        partial = target / f".{ENTRY}.partial"
        partial.write_text(entry.to_json())
        os.replace(partial, target / ENTRY)

    def _publish(self, entry: WheelEntry) -> None:
        if self.store is None:
            return
        client, bucket = self.store.client, self.store.bucket
        prefix = f"{BUCKET_PREFIX}{entry.directory}"
        wheel = self.home / entry.directory / entry.wheel
        self.store.retry(
            f"put {prefix}/{entry.wheel}",
            lambda: client.upload_file(
                str(wheel), bucket, f"{prefix}/{entry.wheel}",
                ExtraArgs={"Metadata": {"sha256": entry.sha256}},
            ),
        )  # fmt: skip
        try:
            # The entry last, and only where none is: the first pod to publish a key wins.
            self.store.conditional(
                f"put {prefix}/{ENTRY}",
                f"{prefix}/{ENTRY}",
                lambda: client.put_object(
                    Bucket=bucket,
                    Key=f"{prefix}/{ENTRY}",
                    Body=entry.to_json().encode(),
                    IfNoneMatch="*",
                ),
            )
        except KeyTaken:
            self.say(f"wheelhouse: another pod published {prefix} first; this pod keeps its own")
            return
        self.say(f"wheelhouse: published {prefix}/{entry.wheel} for the fleet")

    def _get_text(self, key: str) -> str | None:
        client, bucket = self.store.client, self.store.bucket  # type: ignore[union-attr]

        def get() -> str | None:
            try:
                return str(client.get_object(Bucket=bucket, Key=key)["Body"].read().decode())
            except ClientError as error:
                if error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                    return None
                raise

        return self.store.retry(f"get {key}", get)  # type: ignore[union-attr]

    def _download(self, key: str, dest: Path) -> None:
        client, bucket = self.store.client, self.store.bucket  # type: ignore[union-attr]
        self.store.retry(  # type: ignore[union-attr]
            f"get {key}", lambda: client.download_file(bucket, key, str(dest))
        )


def _entry_of(directory: str, text: str, where: str) -> WheelEntry:
    """The entry read at ``where``, which must be the one for ``directory``: a wheel is filed
    where its entry says, so an entry naming another place (``../``) is refused."""
    entry = WheelEntry.from_json(text, where)
    if entry.directory != directory:
        raise WheelhouseError(
            f"{where} describes {entry.directory}, not {directory}: refused; delete it to"
            " fetch or build the wheel again"
        )
    return entry


def _download_source(spec: WheelSpec, dest: Path) -> None:
    """The sdist or release asset, checked against the sha256 the spec pins (if it does)."""
    with urllib.request.urlopen(spec.source, timeout=60) as answer, open(dest, "wb") as out:
        shutil.copyfileobj(answer, out, CHUNK)
    found = sha256_of(dest)
    if spec.source_sha256 is not None and found != spec.source_sha256:
        raise WheelhouseError(
            f"{spec.source} has sha256 {found}, expected {spec.source_sha256}:"
            " refused; it is not the file the stack pins"
        )


def uv_build(python: str, environment: Mapping[str, str]) -> Callable[[Path, Path], Path]:
    """A build of an sdist into a wheel by uv, with ``python``'s venv as the build
    environment (no isolation: the build imports what the wheel compiles against), its
    output streamed."""

    def build(sdist: Path, out: Path) -> Path:
        from uv import find_uv_bin  # noqa: PLC0415 - the tools' venv holds uv; tests' too

        command = [
            find_uv_bin(), "build", "--wheel", "--no-build-isolation",
            "--python", python, "--out-dir", str(out), str(sdist),
        ]  # fmt: skip
        # The venv's own tools first on PATH: torch's extension build looks for ninja there.
        path = f"{Path(python).parent}{os.pathsep}{os.environ.get('PATH', os.defpath)}"
        done = subprocess.run(
            command, env={**os.environ, **environment, "PATH": path}, stderr=subprocess.STDOUT
        )
        wheels = sorted(out.glob("*.whl")) if out.exists() else []
        if done.returncode != 0 or len(wheels) != 1:
            raise WheelhouseError(
                f"building {sdist.name} failed (uv build exited {done.returncode}):"
                " see its lines above"
            )
        return wheels[0]

    return build


def main(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """`podforge wheelhouse ensure`: the sync line on stdout (or into ``--line-to``)."""
    try:
        name, version = _pinned_requirement(args.requirement)
        spec = WheelSpec(name, version, args.source, args.source_sha256)
        environment = dict(_assignment(pair) for pair in args.env)
        key = venv_key(args.python, args.against, environment, spec.prebuilt)
        store = _store(environ)
        house = Wheelhouse(Path(args.home), store, say=lambda line: print(line, flush=True))
        entry = house.ensure(spec, key, uv_build(args.python, environment), args.sha256)
    except (PodforgeError, OSError) as error:
        print(f"podforge wheelhouse: {error}", file=sys.stderr)
        return 1
    line = entry.sync_line(str(Path(args.home)))
    if args.line_to:
        Path(args.line_to).write_text(line + "\n")
    else:
        print(line)
    return 0


def _pinned_requirement(text: str) -> tuple[str, str]:
    name, separator, version = text.partition("==")
    if not separator or not name or not version:
        raise WheelhouseError(f"{text!r} is not NAME==VERSION")
    return name, version


def _assignment(text: str) -> tuple[str, str]:
    name, separator, value = text.partition("=")
    if not separator:
        raise WheelhouseError(f"--env {text!r} is not NAME=VALUE")
    return name, value


def _store(environ: Mapping[str, str]) -> Store | None:
    """The fleet's bucket where R2 is set (the environment or R2_ENV_FILE), else None."""
    if not (environ.get("R2_ENDPOINT") or environ.get("R2_ENV_FILE")):
        return None
    settings = r2_settings(environ)
    retry = Retry(settings.bucket, budget=120.0, stopping=threading.Event(), say=print)
    return Store(make_client(settings), settings.bucket, retry)
