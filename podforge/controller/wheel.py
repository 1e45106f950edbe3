"""A minimal, reproducible wheel writer (PEP 427): podforge's own pod-side wheel is built
with it, so the pod's venv lists podforge like any other distribution and one fact tells
whether the tools are current (the version carries a hash of the code).
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

# Fixed timestamps: the same content gives the same bytes, hence the same sha1 remotely.
_EPOCH = (1980, 1, 1, 0, 0, 0)


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return f"sha256={digest.decode()}"


def wheel_name(name: str, version: str, tag: str = "py3-none-any") -> str:
    return f"{name.replace('-', '_')}-{version}-{tag}.whl"


def build_wheel(
    dest_dir: Path,
    name: str,
    version: str,
    files: Mapping[str, bytes],
    requires: Sequence[str] = (),
    console_scripts: Mapping[str, str] | None = None,
    tag: str = "py3-none-any",
) -> Path:
    """Write ``name-version-tag.whl`` holding ``files`` (archive path -> bytes)."""
    dist_info = f"{name.replace('-', '_')}-{version}.dist-info"
    meta = [f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}"]
    meta += [f"Requires-Dist: {requirement}" for requirement in requires]
    entries = dict(sorted(files.items()))
    entries[f"{dist_info}/METADATA"] = ("\n".join(meta) + "\n").encode()
    entries[f"{dist_info}/WHEEL"] = (
        f"Wheel-Version: 1.0\nGenerator: podforge\nRoot-Is-Purelib: true\nTag: {tag}\n"
    ).encode()
    if console_scripts:
        lines = [f"{script} = {target}" for script, target in sorted(console_scripts.items())]
        entries[f"{dist_info}/entry_points.txt"] = (
            "[console_scripts]\n" + "\n".join(lines) + "\n"
        ).encode()
    record = [f"{path},{_record_hash(data)},{len(data)}" for path, data in entries.items()]
    record.append(f"{dist_info}/RECORD,,")
    entries[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / wheel_name(name, version, tag)
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path, data in entries.items():
            info = zipfile.ZipInfo(path, date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return target


def package_files(package_dir: Path, prefix: str) -> dict[str, bytes]:
    """A source package's .py files as wheel entries under ``prefix/``."""
    return {
        f"{prefix}/{path.relative_to(package_dir).as_posix()}": path.read_bytes()
        for path in sorted(package_dir.rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def content_version(base: str, files: Mapping[str, bytes]) -> str:
    """``base+g<hash>``: a local version that changes exactly when the code does."""
    digest = hashlib.sha256()
    for path, data in sorted(files.items()):
        digest.update(path.encode() + b"\0" + data + b"\0")
    return f"{base}+g{digest.hexdigest()[:12]}"
