"""A stand-in for the Hugging Face Hub that huggingface_hub really downloads from.

Serves the catalog's repo ids and paths with deterministic content of configurable size:
``HEAD/GET /{repo}/resolve/{rev}/{path}`` (X-Repo-Commit, X-Linked-Etag = sha256,
X-Linked-Size, Range -> 206), ``/api/models/{repo}[/revision/{rev}]`` and
``/api/models/{repo}/tree/{rev}``. Optional bearer token for gated repos. Faults for tests
are switched at run time: ``POST /_control/faults`` with JSON, e.g.
``{"throttle_bps": 1000000, "reset_after": 65536, "errors_5xx": 3, "truncate_after": 1000,
"wrong_bytes": true, "cdn_redirect": true}``; ``GET /_control/log`` returns the request log
(method, path, Range).
With Xet on (``--xet`` or ``POST /_control/xet {"enabled": true}``) resolve answers also carry
``X-Xet-Hash`` and a ``xet-auth`` Link, and the hub serves the CAS side (``sandbox/xet.py``).

Beside Hugging Face it stands in for CivitAI and for plain URLs:
``GET /api/v1/model-versions/{id}`` (files with name, sizeKB, upper-case SHA256, primary,
downloadUrl), ``/api/download/models/{id}[?type=...]`` (401 without the CivitAI token for
versions that need it, as ``?token=`` or a bearer header; 404 for unknown ids; else 307 to
``/_presigned/...``, which refuses any request carrying an Authorization header, as
CivitAI's CDN does), and ``/files/{name}`` (Range, HEAD). The throttle fault applies per
response, so per connection; ``link_bps`` caps all of them together, as one link would
(bench.serve). On that same link the hub also tunnels (``CONNECT``, a pod's ``HTTPS_PROXY``)
to PyPI's index and files, and nowhere else, so a pod's stack downloads share it;
``GET /_control/link`` says how many bytes came down the tunnels.

Run: ``python -m sandbox.hub --port 8555 --dir DIR [--file-size 1048576] [--gated REPO]``
with the gated repos' token in ``PODFORGE_HUB_TOKEN`` and CivitAI's in
``PODFORGE_CIVITAI_TOKEN``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import secrets
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from podforge.core.catalog import CATALOG
from sandbox import xet
from sandbox.templates import template_models

CHUNK = 1 << 20
# A paced response's largest piece, a file's or a tunnel's: each connection takes the link's
# turns in pieces of one size, so the link is shared by connection, as TCP shares one.
LINK_PIECE = CHUNK // 4
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_CDN = re.compile(r"^/_cdn/(?P<repo>[^/]+/[^/]+)/(?P<rev>[^/]+)/(?P<path>.+)$")
_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?$")
_XET_TOKEN = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/xet-read-token/(?P<rev>[^/]+)$")
_CAS_RECONSTRUCTION = re.compile(r"^/cas/v(?P<version>\d+)/reconstructions/(?P<hash>[0-9a-f]{64})$")
_CAS_XORB = re.compile(r"^/cas/xorb/(?P<hash>[0-9a-f]{64})$")
_CIVITAI_VERSION = re.compile(r"^/api/v1/model-versions/(?P<id>\d+)$")
_CIVITAI_DOWNLOAD = re.compile(r"^/api/download/models/(?P<id>\d+)$")
_PRESIGNED = re.compile(r"^/_presigned/(?P<id>\d+)/(?P<name>[^/]+)$")
_PLAIN = re.compile(r"^/files/(?P<name>[^/]+)$")
_TREE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$")


@dataclass
class RepoFile:
    path: str
    disk: Path
    size: int
    sha256: str


@dataclass
class Repo:
    id: str
    commit: str
    files: dict[str, RepoFile] = field(default_factory=dict)
    gated: bool = False


# CivitAI-like model versions: id -> its files (name, CivitAI's file type), the primary
# first. Downloading 1001 needs the CivitAI token; 1002 is public.
CIVITAI_VERSIONS: dict[int, list[tuple[str, str]]] = {
    1001: [("sandbox_style_lora.safetensors", "Model")],
    1002: [
        ("sandbox_checkpoint.safetensors", "Model"),
        ("sandbox_checkpoint_training.zip", "Training Data"),
    ],
}
CIVITAI_PUBLIC = frozenset({1002})


def civitai_versions() -> dict[int, list[tuple[str, str]]]:
    """The versions above and those the sandbox's templates name (public, one file each)."""
    named = {version: [(name, "Model")] for version, name in template_models()[1].items()}
    return {**named, **CIVITAI_VERSIONS}


# Files at plain URLs: /files/{name}.
PLAIN_FILES = ("sandbox_upscaler.pth", "sandbox_big.bin")


def civitai_key(version: int, name: str) -> str:
    """A CivitAI file's key in ``sizes`` (and its place on disk)."""
    return f"civitai/{version}/{name}"


def plain_key(name: str) -> str:
    return f"files/{name}"


def _content_block(key: str) -> bytes:
    """1 MiB of bytes derived from ``key``: distinct per file, cheap to repeat for GBs."""
    seed = hashlib.sha256(key.encode()).digest()
    block = bytearray()
    counter = 0
    while len(block) < CHUNK:
        block += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(block[:CHUNK])


def generate_repos(
    directory: Path,
    file_size: int,
    sizes: dict[str, int] | None = None,
    gated: frozenset[str] = frozenset(),
) -> dict[str, Repo]:
    """Write every catalog file (deterministic content) under ``directory``; return the index.

    ``sizes`` overrides the size of single files by their path in the repo.
    """
    repos: dict[str, Repo] = {}
    named = [(str(entry.repo), str(entry.path)) for entry in CATALOG] + template_models()[0]
    for repo_id, path in named:
        repo = repos.setdefault(
            repo_id,
            Repo(
                id=repo_id,
                commit=hashlib.sha1(repo_id.encode()).hexdigest(),
                gated=repo_id in gated,
            ),
        )
        if path in repo.files:
            continue
        size = (sizes or {}).get(path, file_size)
        disk = directory / repo_id / path
        disk.parent.mkdir(parents=True, exist_ok=True)
        digest = _write_file(disk, f"{repo_id}/{path}", size)
        repo.files[path] = RepoFile(path, disk, size, digest)
    return repos


def generate_extras(
    directory: Path, file_size: int, sizes: dict[str, int] | None = None
) -> dict[str, RepoFile]:
    """The CivitAI versions' and plain URLs' files, by key (civitai_key, plain_key)."""
    files: dict[str, RepoFile] = {}
    keys = [civitai_key(v, name) for v, named in civitai_versions().items() for name, _ in named]
    for key in [*keys, *(plain_key(name) for name in PLAIN_FILES)]:
        size = (sizes or {}).get(key, file_size)
        disk = directory / "_extras" / key
        disk.parent.mkdir(parents=True, exist_ok=True)
        files[key] = RepoFile(key, disk, size, _write_file(disk, key, size))
    return files


def _write_file(disk: Path, key: str, size: int) -> str:
    block = _content_block(key)
    digest = hashlib.sha256()
    if disk.exists() and disk.stat().st_size == size and disk.with_suffix(".sha256").exists():
        return disk.with_suffix(".sha256").read_text().strip()
    with open(disk, "wb") as out:
        remaining = size
        while remaining:
            piece = block[: min(remaining, CHUNK)]
            out.write(piece)
            digest.update(piece)
            remaining -= len(piece)
    disk.with_suffix(".sha256").write_text(digest.hexdigest() + "\n")
    return digest.hexdigest()


# Where a pod's installers may tunnel through the hub (bench.serve's cold stack): PyPI only.
TUNNEL_TARGETS = frozenset({("pypi.org", 443), ("files.pythonhosted.org", 443)})


class Link:
    """One link every response shares: each piece takes its turn at the link's rate."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free_at = 0.0  # when the pieces already given a turn are through

    def wait(self, size: int, bps: int) -> float:
        """Seconds until ``size`` more bytes are through, queued behind the others'."""
        with self._lock:
            now = time.monotonic()
            self._free_at = max(now, self._free_at) + size / bps
            return self._free_at - now


@dataclass
class Faults:
    throttle_bps: int = 0  # bytes per second per response, 0 = unlimited
    link_bps: int = 0  # bytes per second of all responses together (one link), 0 = unlimited
    # Close the connection after this many body bytes, in the first ``resets`` responses
    # longer than that.
    reset_after: int = 0
    resets: int = 0  # how many responses get reset
    errors_5xx: int = 0  # the next N requests get 503
    truncate_after: int = 0  # send only this many body bytes, then close (once each)
    truncations: int = 0
    wrong_bytes: bool = False  # flip one byte of every body
    # Answer resolve with a 302 to /_cdn/... carrying the X-Linked-* headers, as
    # huggingface.co does for LFS files; the CDN's own answer has no X-Linked-*.
    cdn_redirect: bool = False


class Hub:
    def __init__(
        self,
        repos: dict[str, Repo],
        token: str | None = None,
        offer_xet: bool = False,
        extras: dict[str, RepoFile] | None = None,
        civitai_token: str | None = None,
    ) -> None:
        self.repos = repos
        self.token = token
        self.extras = extras or {}
        self.civitai_token = civitai_token
        self.presign = secrets.token_hex(16)  # the CDN's signature in presigned URLs
        self.civitai_versions = civitai_versions()
        self.civitai_public = CIVITAI_PUBLIC | (set(self.civitai_versions) - set(CIVITAI_VERSIONS))
        self.faults = Faults()
        self.link = Link()
        self.tunnel_to = TUNNEL_TARGETS
        self.tunneled = 0  # bytes that came down the CONNECT tunnels
        self.log: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.offer_xet = offer_xet
        self.cas_token = secrets.token_hex(16)  # what the xet-read-token route hands out
        self.xet_of: dict[Path, xet.XetFile] = {}  # by the served file on disk
        self.xet_files: dict[str, xet.XetFile] = {}  # by Xet file hash
        self.xorbs: dict[str, tuple[xet.XetFile, int]] = {}
        for repo in repos.values():
            for entry in repo.files.values():
                file = xet.XetFile(entry.disk, entry.size, entry.sha256)
                self.xet_of[entry.disk] = file
                self.xet_files[file.file_hash] = file
                for index in range(file.xorbs):
                    self.xorbs[file.xorb_hash(index)] = (file, index)

    def take_fault(self, name: str) -> bool:
        """Consume one unit of a counted fault."""
        with self.lock:
            left = getattr(self.faults, name)
            if left > 0:
                setattr(self.faults, name, left - 1)
                return True
            return False


class Handler(BaseHTTPRequestHandler):
    server: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return  # the request log is kept in memory, served at /_control/log

    # -- plumbing ---------------------------------------------------------------------------
    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status: int, message: str, code: str | None = None) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._json(status, {"error": message}, headers)

    def _record(self) -> None:
        """The request into the log; ``_body`` adds the body bytes it sent ("sent")."""
        hub = self.server.hub
        self.entry: dict[str, Any] = {
            "method": self.command,
            "path": re.sub(r"sig=[^&]*", "sig=<redacted>", self.path),
            "range": self.headers.get("Range"),
            "authorization": "Authorization" in self.headers,
            "time": time.time(),
        }
        with hub.lock:
            hub.log.append(self.entry)

    def _authorised(self, repo: Repo) -> bool:
        if not repo.gated:
            return True
        expected = f"Bearer {self.server.hub.token}"
        return self.headers.get("Authorization") == expected

    # -- verbs ------------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        if self.path == "/_control/log":
            with self.server.hub.lock:
                self._json(200, list(self.server.hub.log))
            return
        if self.path == "/_control/link":
            with self.server.hub.lock:
                self._json(200, {"tunneled": self.server.hub.tunneled})
            return
        self._serve()

    def do_CONNECT(self) -> None:
        """A tunnel to PyPI for a pod's pip and uv, its bytes down paced by the link."""
        host, _, port = self.path.rpartition(":")
        target = (host, int(port)) if port.isdigit() else (host, 0)
        allowed = self.server.hub.tunnel_to
        if target not in allowed:
            shown = ", ".join(f"{h}:{p}" for h, p in sorted(allowed))
            self._error(403, f"the hub tunnels only to {shown}, not {self.path}")
            return
        try:
            remote = socket.create_connection(target, timeout=30)
        except OSError as error:
            self._error(502, f"{self.path} is not reachable: {error}")
            return
        self.send_response(200, "Connection Established")
        self.end_headers()
        self.close_connection = True
        with remote:
            remote.settimeout(300)
            threading.Thread(target=_pipe_up, args=(self.connection, remote), daemon=True).start()
            self._pipe_down(remote)

    def _pipe_down(self, remote: socket.socket) -> None:
        hub = self.server.hub
        try:
            while piece := remote.recv(LINK_PIECE):
                self.connection.sendall(piece)
                with hub.lock:
                    hub.tunneled += len(piece)
                if hub.faults.link_bps:
                    time.sleep(hub.link.wait(len(piece), hub.faults.link_bps))
            self.connection.shutdown(socket.SHUT_WR)
        except OSError:
            return  # either end went away: the tunnel is over

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        hub = self.server.hub
        if self.path == "/_control/faults":
            with hub.lock:
                hub.faults = Faults(**body)
            self._json(200, {"ok": True})
        elif self.path == "/_control/xet":
            hub.offer_xet = bool(body.get("enabled"))
            self._json(200, {"ok": True})
        elif self.path == "/_control/log/clear":
            with hub.lock:
                hub.log.clear()
            self._json(200, {"ok": True})
        else:
            self._error(404, "no such control endpoint")

    def _serve(self) -> None:
        self._record()
        hub = self.server.hub
        path = self.path.split("?", 1)[0]
        if hub.take_fault("errors_5xx"):
            self._error(503, "Service Unavailable (sandbox fault)")
            return
        if match := _RESOLVE.match(path):
            self._resolve(match["repo"], match["rev"], match["path"])
        elif match := _CDN.match(path):
            self._resolve(match["repo"], match["rev"], match["path"], cdn=True)
        elif match := _XET_TOKEN.match(path):
            self._xet_token(match["repo"])
        elif match := _CAS_RECONSTRUCTION.match(path):
            self._reconstruction(int(match["version"]), match["hash"])
        elif match := _CAS_XORB.match(path):
            self._xorb(match["hash"])
        elif match := _CIVITAI_VERSION.match(path):
            self._civitai_version(int(match["id"]))
        elif match := _CIVITAI_DOWNLOAD.match(path):
            self._civitai_download(int(match["id"]))
        elif match := _PRESIGNED.match(path):
            self._presigned(int(match["id"]), match["name"])
        elif match := _PLAIN.match(path):
            entry = hub.extras.get(plain_key(match["name"]))
            if entry is None:
                self._error(404, "no such file")
            else:
                self._send_file(entry)
        elif match := _TREE.match(path):
            self._tree(match["repo"], match["path"] or "")
        elif match := _API.match(path):
            self._info(match["repo"])
        else:
            self._error(404, f"no route for {path}")

    def _repo(self, repo_id: str) -> Repo | None:
        repo = self.server.hub.repos.get(repo_id)
        if repo is None:
            self._error(404, "Repository not found", "RepoNotFound")
            return None
        if not self._authorised(repo):
            self._error(401, "Access to this gated repo is restricted", "GatedRepo")
            return None
        return repo

    def _info(self, repo_id: str) -> None:
        if repo := self._repo(repo_id):
            self._json(
                200,
                {
                    "id": repo.id,
                    "modelId": repo.id,
                    "sha": repo.commit,
                    "private": False,
                    "gated": "manual" if repo.gated else False,
                    "siblings": [{"rfilename": p} for p in sorted(repo.files)],
                },
            )

    def _tree(self, repo_id: str, prefix: str) -> None:
        if repo := self._repo(repo_id):
            entries = [
                {
                    "type": "file",
                    "path": f.path,
                    "size": f.size,
                    "oid": hashlib.sha1(f.sha256.encode()).hexdigest(),
                    "lfs": {"oid": f.sha256, "size": f.size, "pointerSize": 134},
                }
                for f in sorted(repo.files.values(), key=lambda f: f.path)
                if f.path.startswith(prefix)
            ]
            self._json(200, entries)

    def _resolve(self, repo_id: str, revision: str, path: str, cdn: bool = False) -> None:
        """A file's bytes; ``cdn``: as the CDN serves them, without the hub's headers."""
        repo = self._repo(repo_id)
        if repo is None:
            return
        entry = repo.files.get(path)
        if entry is None or revision not in ("main", repo.commit):
            self._error(404, "Entry not found", "EntryNotFound")
            return
        if not cdn and self.server.hub.faults.cdn_redirect:
            self.send_response(302)
            self.send_header("Location", f"/_cdn/{repo.id}/{revision}/{path}")
            self.send_header("Content-Length", "0")
            self._hub_headers(repo, revision, entry)
            self.end_headers()
            return
        self._send_file(entry, None if cdn else (repo, revision))

    def _send_file(self, entry: RepoFile, hub_headers: tuple[Repo, str] | None = None) -> None:
        """The file's bytes, a byte range of them (206), or 416; HEAD: the headers alone."""
        start, end = 0, entry.size - 1
        status = 200
        if (wanted := self.headers.get("Range")) and (
            m := re.fullmatch(r"bytes=(\d+)-(\d*)", wanted.strip())
        ):
            start = int(m[1])
            end = min(int(m[2]), entry.size - 1) if m[2] else entry.size - 1
            if start >= entry.size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{entry.size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{entry.sha256}"')
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{entry.size}")
        if hub_headers is not None:
            self._hub_headers(*hub_headers, entry)
        self.end_headers()
        if self.command == "GET":
            self._body(entry.disk, start, end - start + 1)

    def _hub_headers(self, repo: Repo, revision: str, entry: RepoFile) -> None:
        """What huggingface.co says about a file besides its bytes: commit, sha256, size, Xet."""
        self.send_header("X-Repo-Commit", repo.commit)
        self.send_header("X-Linked-Etag", f'"{entry.sha256}"')
        self.send_header("X-Linked-Size", str(entry.size))
        if self.server.hub.offer_xet:
            self.send_header("X-Xet-Hash", self.server.hub.xet_of[entry.disk].file_hash)
            route = f"{self._base()}/api/models/{repo.id}/xet-read-token/{revision}"
            self.send_header("Link", f'<{route}>; rel="xet-auth"')

    # -- CivitAI ---------------------------------------------------------------------------
    def _civitai_version(self, version: int) -> None:
        named = self.server.hub.civitai_versions.get(version)
        if named is None:
            self._json(404, {"error": f"No model version with id {version}"})
            return
        files = []
        for index, (name, kind) in enumerate(named):
            entry = self.server.hub.extras[civitai_key(version, name)]
            query = "" if index == 0 else "?" + urllib.parse.urlencode({"type": kind})
            files.append(
                {
                    "id": version * 10 + index,
                    "name": name,
                    "type": kind,
                    "sizeKB": entry.size / 1024,
                    "primary": index == 0,
                    "hashes": {"SHA256": entry.sha256.upper(), "AutoV2": entry.sha256[:10]},
                    "downloadUrl": f"{self._base()}/api/download/models/{version}{query}",
                }
            )
        self._json(200, {"id": version, "modelId": version // 10, "files": files})

    def _civitai_download(self, version: int) -> None:
        hub = self.server.hub
        named = hub.civitai_versions.get(version)
        if named is None:
            self._json(404, {"error": f"No model version with id {version}"})
            return
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        given = query.get("token", [None])[0] or self.headers.get("Authorization", "").removeprefix(
            "Bearer "
        )
        if version not in hub.civitai_public and (
            not hub.civitai_token or given != hub.civitai_token
        ):
            self._json(
                401,
                {
                    "error": "Unauthorized",
                    "message": "The creator of this asset requires you to be logged in",
                },
            )
            return
        kind = query.get("type", [named[0][1]])[0]
        name = next((n for n, k in named if k == kind), None)
        if name is None:
            self._json(404, {"error": f"No file of type {kind} in version {version}"})
            return
        location = f"{self._base()}/_presigned/{version}/{name}?sig={hub.presign}"
        self.send_response(307)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _presigned(self, version: int, name: str) -> None:
        hub = self.server.hub
        if "Authorization" in self.headers:
            # As CivitAI's CDN: a presigned URL takes no other credentials.
            self._error(400, "Only one auth mechanism allowed")
            return
        if f"sig={hub.presign}" not in self.path:
            self._error(403, "presigned URL signature missing or wrong")
            return
        entry = hub.extras.get(civitai_key(version, name))
        if entry is None:
            self._error(404, "no such file")
            return
        self._send_file(entry)

    # -- Xet storage ------------------------------------------------------------------------
    def _base(self) -> str:
        return f"http://{self.headers['Host']}"

    def _xet_token(self, repo_id: str) -> None:
        if self._repo(repo_id):
            hub = self.server.hub
            expires = int(time.time()) + 3600
            cas = f"{self._base()}/cas"
            headers = {
                "X-Xet-Cas-Url": cas,
                "X-Xet-Access-Token": hub.cas_token,
                "X-Xet-Token-Expiration": str(expires),
            }
            body = {"accessToken": hub.cas_token, "exp": expires, "casUrl": cas}
            self._json(200, body, headers)

    def _reconstruction(self, version: int, file_hash: str) -> None:
        hub = self.server.hub
        if self.headers.get("Authorization") != f"Bearer {hub.cas_token}":
            self._error(401, "CAS token missing or wrong")
            return
        file = hub.xet_files.get(file_hash)
        if version != 1 or file is None:
            self._error(404, "no such reconstruction")
            return
        first, last = 0, file.size - 1
        if m := re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "").strip()):
            first, last = int(m[1]), min(int(m[2] or last), last)
            if first > last:
                self._error(416, "range starts past the end of the file")
                return
        url = f"{self._base()}/cas/xorb/{{hash}}?sig={hub.cas_token}"
        self._json(200, xet.reconstruction(file, first, last, url))

    def _xorb(self, xorb_hash: str) -> None:
        hub = self.server.hub
        # Presigned like the real transfer URLs: the signature is in the query, no header.
        if f"sig={hub.cas_token}" not in self.path:
            self._error(403, "xorb URL signature missing or wrong")
            return
        found = hub.xorbs.get(xorb_hash)
        m = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range", "").strip())
        if found is None or m is None:
            self._error(404 if found is None else 400, "no such xorb, or no byte Range")
            return
        data = xet.xorb_bytes(*found, int(m[1]), int(m[2]))
        if hub.faults.wrong_bytes:
            data = data[:-1] + bytes([data[-1] ^ 0xFF])  # a range always ends in chunk data
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self, disk: Path, start: int, length: int) -> None:
        hub = self.server.hub
        faults = hub.faults
        cut = None
        # A cut is spent on a response long enough to reach it (not a 1-byte range probe).
        if faults.reset_after and length > faults.reset_after and hub.take_fault("resets"):
            cut = faults.reset_after
        elif (
            faults.truncate_after
            and length > faults.truncate_after
            and hub.take_fault("truncations")
        ):
            cut = faults.truncate_after
        paced = faults.throttle_bps or faults.link_bps
        plain = cut is None and not faults.wrong_bytes and not paced
        sent = 0
        began = time.monotonic()
        with open(disk, "rb") as source:
            if plain:
                # Zero-copy like a CDN's, so the hub's CPU does not weigh on its clients.
                self.wfile.flush()
                self.entry["sent"] = self.connection.sendfile(source, start, length)
                return
            source.seek(start)
            # Throttled, a piece is ~1/10 s worth, so even a small file arrives at the rate.
            piece_size = LINK_PIECE
            for bps in (faults.throttle_bps, faults.link_bps):
                if bps:
                    piece_size = min(piece_size, max(1024, bps // 10))
            while sent < length:
                piece = source.read(min(piece_size, length - sent))
                if cut is not None and sent + len(piece) > cut:
                    piece = piece[: cut - sent]
                if faults.wrong_bytes and sent == 0 and piece:
                    piece = bytes([piece[0] ^ 0xFF]) + piece[1:]
                self.wfile.write(piece)
                sent += len(piece)
                self.entry["sent"] = sent
                if cut is not None and sent >= cut:
                    self.close_connection = True
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                link_bps = hub.faults.link_bps
                if link_bps:
                    time.sleep(hub.link.wait(len(piece), link_bps))
                # Read live: a throttle lifted meanwhile lets this response finish at once.
                throttle_bps = hub.faults.throttle_bps
                if throttle_bps:
                    ahead = sent / throttle_bps - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)


def _pipe_up(client: socket.socket, remote: socket.socket) -> None:
    """What the pod sends (its TLS handshake, its requests), unpaced: they are small."""
    try:
        while piece := client.recv(LINK_PIECE):
            remote.sendall(piece)
        remote.shutdown(socket.SHUT_WR)
    except OSError:
        return  # either end went away: the tunnel is over


class HubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], hub: Hub) -> None:
        super().__init__(address, Handler)
        self.hub = hub


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox.hub")
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--file-size", type=int, default=64 * 1024)
    parser.add_argument("--sizes", type=json.loads, default={}, help='JSON {"path": bytes}')
    parser.add_argument("--gated", action="append", default=[], help="a gated repo id")
    parser.add_argument("--xet", action="store_true", help="offer every file through Xet too")
    args = parser.parse_args()
    repos = generate_repos(args.dir, args.file_size, args.sizes, frozenset(args.gated))
    extras = generate_extras(args.dir, args.file_size, args.sizes)
    # Tokens come from the environment, never the command line.
    hub = Hub(
        repos,
        os.environ.get("PODFORGE_HUB_TOKEN"),
        args.xet,
        extras,
        os.environ.get("PODFORGE_CIVITAI_TOKEN"),
    )
    server = HubServer((args.address, args.port), hub)
    print(f"hub: serving {len(repos)} repos on http://{args.address}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
