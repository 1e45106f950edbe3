"""The sandbox hub's Xet storage: just enough of the CAS protocol for hf_xet to download.

Layout (xet-core's spec/download_protocol.md and spec/xorb.md): a file is cut into 64 KiB
chunks; every 1024 chunks form one xorb, stored uncompressed (compression type 0), each chunk
behind an 8-byte header. ``GET /v1/reconstructions/{file_hash}`` (with an optional byte Range)
lists, per xorb, the chunk range a file needs and a presigned URL with the byte range to fetch.
Hashes are names here, not Merkle hashes: hf_xet reassembles by them but does not recompute
them. Only v1 reconstructions are served; hf_xet asks for v2 first and falls back on 404.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

XET_CHUNK = 64 * 1024
CHUNKS_PER_XORB = 1024
HEADER = 8


@dataclass(frozen=True)
class XetFile:
    disk: Path
    size: int
    sha256: str

    @property
    def file_hash(self) -> str:
        return hashlib.sha256(f"xet-file:{self.sha256}".encode()).hexdigest()

    def xorb_hash(self, index: int) -> str:
        return hashlib.sha256(f"xet-xorb:{self.sha256}:{index}".encode()).hexdigest()

    @property
    def chunks(self) -> int:
        return max(1, -(-self.size // XET_CHUNK))

    @property
    def xorbs(self) -> int:
        return -(-self.chunks // CHUNKS_PER_XORB)

    def chunk_size(self, chunk: int) -> int:
        return min(XET_CHUNK, self.size - chunk * XET_CHUNK)


def reconstruction(file: XetFile, first: int, last: int, xorb_url: str) -> dict[str, Any]:
    """The v1 QueryReconstructionResponse for bytes ``first..last`` (inclusive).

    ``xorb_url`` is formatted with ``hash`` to give each xorb's presigned URL.
    """
    first_chunk, last_chunk = first // XET_CHUNK, last // XET_CHUNK
    terms, fetch_info = [], {}
    for xorb in range(first_chunk // CHUNKS_PER_XORB, last_chunk // CHUNKS_PER_XORB + 1):
        base = xorb * CHUNKS_PER_XORB
        start = max(first_chunk, base) - base
        end = min(last_chunk + 1, base + CHUNKS_PER_XORB) - base
        name = file.xorb_hash(xorb)
        unpacked = sum(file.chunk_size(base + c) for c in range(start, end))
        terms.append(
            {"hash": name, "unpacked_length": unpacked, "range": {"start": start, "end": end}}
        )
        byte_end = (end - 1) * (HEADER + XET_CHUNK) + HEADER + file.chunk_size(base + end - 1)
        fetch_info[name] = [
            {
                "range": {"start": start, "end": end},
                "url": xorb_url.format(hash=name),
                "url_range": {"start": start * (HEADER + XET_CHUNK), "end": byte_end - 1},
            }
        ]
    return {
        "offset_into_first_range": first - first_chunk * XET_CHUNK,
        "terms": terms,
        "fetch_info": fetch_info,
    }


def xorb_bytes(file: XetFile, xorb: int, first: int, last: int) -> bytes:
    """Bytes ``first..last`` (inclusive) of xorb ``xorb`` as serialized: header, chunk, ..."""
    base = xorb * CHUNKS_PER_XORB
    stride = HEADER + XET_CHUNK
    out = bytearray()
    with open(file.disk, "rb") as source:
        for local in range(first // stride, last // stride + 1):
            size = file.chunk_size(base + local)
            if size <= 0:
                break
            source.seek((base + local) * XET_CHUNK)
            length = size.to_bytes(3, "little")
            out += bytes([0]) + length + bytes([0]) + length + source.read(size)
    skip = first - (first // stride) * stride
    return bytes(out[skip : skip + last - first + 1])
