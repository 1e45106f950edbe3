"""Where the fetcher learns a model file's size and sha256, and opens its bytes: Hugging
Face, CivitAI or any URL (podforge/core/sources.py says how an entry names them).

- Hugging Face: ``HEAD {endpoint}/{repo}/resolve/{revision}/{path}`` (X-Linked-Size,
  X-Linked-Etag = sha256, X-Xet-Hash); the token as a bearer header.
- CivitAI: ``GET {endpoint}/api/v1/model-versions/{id}`` names each file with its size (in
  KB) and SHA256; its bytes come from the file's ``downloadUrl`` (``/api/download/models/
  {id}``), which answers 307 to a presigned CDN URL. The token travels as ``?token=`` on that
  API call alone: the CDN refuses an Authorization header, and the redirect target is never
  sent the token.
- A URL: HEAD for the size; the sha256 only when the entry gives one.

Tokens are never printed: messages name the file by its source's ``label``.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from podforge.core.errors import PodforgeError
from podforge.core.sources import ModelSource


class FetchError(PodforgeError, RuntimeError):
    """A file that could not be fetched; the message names it and says why."""


class Retryable(PodforgeError):
    """A transient failure (reset, 5xx, short body): try again from what is written."""


@dataclass(frozen=True)
class Remote:
    """Where a file's bytes are and what they must be."""

    url: str  # may carry a token in its query (CivitAI): never shown
    size: int
    sha256: str | None
    headers: tuple[tuple[str, str], ...] = ()  # credentials for url's own host only
    xet_hash: str | None = None  # set when the hub offers the file through Xet storage
    xet_refresh_url: str | None = None  # where hf_xet gets (and renews) its CAS token


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """HEAD must read the hub's own answer (X-Linked-*, X-Xet-*), not the CDN's it points to."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class _CredentialsStayHome(urllib.request.HTTPRedirectHandler):
    """Follows redirects, dropping the Authorization header when the host changes (as
    requests does): a presigned CDN URL refuses it, and it is not the CDN's to see."""

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            new.method = "HEAD" if req.get_method() == "HEAD" else "GET"  # urllib makes GET
            if _host(newurl) != _host(req.full_url):
                new.remove_header("Authorization")
        return new


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc.rpartition("@")[2]


class Sources:
    """The endpoints and tokens of every source, and one HTTP client for them."""

    def __init__(
        self,
        hf_endpoint: str = "https://huggingface.co",
        hf_token: str | None = None,
        civitai_endpoint: str = "https://civitai.com",
        civitai_token: str | None = None,
        timeout: float = 30.0,
        xet: bool = True,
    ) -> None:
        self.hf_endpoint = hf_endpoint.rstrip("/")
        self.hf_token = hf_token
        self.civitai_endpoint = civitai_endpoint.rstrip("/")
        self.civitai_token = civitai_token
        self.timeout = timeout
        self.xet = xet  # False: plain HTTP even where the hub offers Xet (HF_HUB_DISABLE_XET)
        self._head_opener = urllib.request.build_opener(_NoRedirect)
        self._opener = urllib.request.build_opener(_CredentialsStayHome)
        self._xet_session: Any = None
        self._xet_lock = threading.Lock()

    # -- what a file is ----------------------------------------------------------------------
    def remote(self, wanted: ModelSource) -> Remote:
        if wanted.kind == "civitai":
            return self._civitai(wanted)
        if wanted.kind == "url":
            return self._url(wanted)
        return self._huggingface(wanted)

    def _huggingface(self, wanted: ModelSource) -> Remote:
        """HEAD: X-Linked-Size / X-Linked-Etag for LFS files, X-Xet-Hash for Xet files."""
        url = (
            f"{self.hf_endpoint}/{wanted.repo}/resolve/{wanted.revision}/"
            f"{urllib.parse.quote(str(wanted.path))}"
        )
        headers = (("Authorization", f"Bearer {self.hf_token}"),) if self.hf_token else ()
        with self._request(wanted, url, headers, "HEAD") as response:
            found = response.headers
            size = found.get("X-Linked-Size") or found["Content-Length"]
            etag = (found.get("X-Linked-Etag") or "").strip('"') or None
            xet_hash = found.get("X-Xet-Hash")
            refresh = _link(found.get_all("Link") or [], "xet-auth")
            refresh = refresh or found.get("X-Xet-Refresh-Route")
        return Remote(
            url=url,
            size=int(size),
            sha256=etag if etag and len(etag) == 64 else None,
            headers=headers,
            xet_hash=xet_hash if xet_hash and refresh else None,
            xet_refresh_url=urllib.parse.urljoin(self.hf_endpoint + "/", refresh)
            if refresh
            else None,
        )

    def _civitai(self, wanted: ModelSource) -> Remote:
        """The version's metadata names the file, its size and SHA256; the bytes come from its
        downloadUrl with the token in the query."""
        url = f"{self.civitai_endpoint}/api/v1/model-versions/{wanted.civitai}"
        headers = (("Authorization", f"Bearer {self.civitai_token}"),) if self.civitai_token else ()
        with self._request(wanted, url, headers) as response:
            try:
                version = json.loads(response.read())
                files = list(version["files"])
            except (ValueError, KeyError, TypeError) as error:
                raise FetchError(
                    f"CivitAI's answer for {wanted.label} is not a model version: {error}"
                ) from None
        chosen = _civitai_file(wanted, files)
        download = str(chosen["downloadUrl"])
        if self.civitai_token:
            joiner = "&" if urllib.parse.urlsplit(download).query else "?"
            download += joiner + urllib.parse.urlencode({"token": self.civitai_token})
        return Remote(
            url=download,
            size=round(float(chosen["sizeKB"]) * 1024),
            sha256=str(chosen.get("hashes", {}).get("SHA256") or "").lower() or None,
        )

    def _url(self, wanted: ModelSource) -> Remote:
        with self._request(wanted, str(wanted.url), (), "HEAD", follow=True) as response:
            length = response.headers.get("Content-Length")
        if length is None:
            raise FetchError(
                f"{wanted.label} answers HEAD without a Content-Length: its size is unknown"
            )
        return Remote(url=str(wanted.url), size=int(length), sha256=wanted.sha256)

    # -- its bytes ---------------------------------------------------------------------------
    def open(
        self, wanted: ModelSource, remote: Remote, start: int = 0, end: int | None = None
    ) -> Any:
        """GET the bytes from ``start`` (to ``end``, inclusive; None: to the end)."""
        headers = remote.headers
        if start or end is not None:
            headers += (("Range", f"bytes={start}-{'' if end is None else end}"),)
        return self._request(wanted, remote.url, headers, follow=True)

    def xet_session(self) -> Any:
        """One hf_xet session (runtime and connection pool) shared by this fetcher's threads."""
        with self._xet_lock:
            if self._xet_session is None:
                import hf_xet  # noqa: PLC0415 - only where the fetch found it installed

                self._xet_session = hf_xet.XetSession()
            return self._xet_session

    def hf_auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.hf_token}"} if self.hf_token else {}

    def _request(
        self,
        wanted: ModelSource,
        url: str,
        headers: tuple[tuple[str, str], ...],
        method: str = "GET",
        follow: bool = False,
    ) -> Any:
        request = urllib.request.Request(url, method=method)
        request.add_header("User-Agent", "podforge-fetch")
        for name, value in headers:
            request.add_header(name, value)
        opener = self._opener if follow or method != "HEAD" else self._head_opener
        try:
            return opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as error:
            if method == "HEAD" and not follow and 300 <= error.code < 400:
                return error  # a redirect to the CDN: its headers are the hub's answer
            if error.code >= 500 or error.code == 429:
                raise Retryable(f"HTTP {error.code}") from None
            raise FetchError(_refused(wanted, error.code)) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            raise Retryable(str(getattr(error, "reason", error))) from None


def _refused(wanted: ModelSource, code: int) -> str:
    """Why a source refused a file, and what to do about it."""
    if wanted.kind == "civitai":
        if code in (401, 403):
            return (
                f"CivitAI refused {wanted.label} (HTTP {code}): set CIVITAI_TOKEN to an API "
                "key that may download it (civitai.com, account settings)"
            )
        if code == 404:
            return f"CivitAI has no model version {wanted.civitai} (HTTP 404): check the id"
        return f"CivitAI answered HTTP {code} for {wanted.label}"
    if wanted.kind == "url":
        return f"HTTP {code} from {wanted.label}"
    hint = " (gated repo: set HF_TOKEN)" if code in (401, 403) else ""
    return f"HTTP {code} from the hub{hint}"


def _civitai_file(wanted: ModelSource, files: list[dict[str, Any]]) -> dict[str, Any]:
    """The file ``wanted.file`` names, or the version's primary one."""
    names = ", ".join(str(f.get("name")) for f in files)
    if wanted.file is not None:
        for found in files:
            if found.get("name") == wanted.file:
                return found
        raise FetchError(f"{wanted.label}: the version has no file of that name (it has {names})")
    primary = [f for f in files if f.get("primary")] or (files if len(files) == 1 else [])
    if len(primary) != 1:
        raise FetchError(
            f"{wanted.label} has {len(files)} files and no single primary one ({names}): "
            "name one with 'file'"
        )
    return primary[0]


def _link(values: list[str], rel: str) -> str | None:
    """The URL of ``rel`` in HTTP Link headers (``<url>; rel="xet-auth", ...``)."""
    for value in values:
        for part in value.split(","):
            url, _, params = part.partition(";")
            if f'rel="{rel}"' in params.replace(" ", "") or f"rel={rel}" in params:
                return url.strip().strip("<>")
    return None
