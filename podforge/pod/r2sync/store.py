"""The bucket, as r2sync talks to it: the boto3 client (R2's S3 API), which errors retrying
can help, the retry itself, HEAD, conditional writes (a 412 raised as ``KeyTaken``) and the
probes (``--test``, whether the store honours conditions)."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from podforge.core.errors import PodforgeError
from podforge.pod.r2sync.settings import Fatal, R2Settings, SyncError
from podforge.pod.retry import Backoff, GaveUp, retrying

PROBE_PREFIX = "podforge-probe/"

T = TypeVar("T")


class KeyTaken(PodforgeError):
    """Another writer's object is at the key (the store refused the write with 412)."""


def make_client(settings: R2Settings) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=settings.endpoint,
        aws_access_key_id=settings.access_key_id,
        aws_secret_access_key=settings.secret_access_key,
        region_name="auto",
        config=Config(
            # boto3 >= 1.36 sends CRC32 checksums R2 rejects (docs/facts.md#r2-and-s3).
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"total_max_attempts": 1},  # retries are ours: backoff, jitter, outages
            connect_timeout=10,
            read_timeout=120,
            max_pool_connections=16,
        ),
    )


_CREDENTIAL_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "InvalidToken",
    "Unauthorized",
}
_RETRY_CODES = {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "503"}


def classify(error: BaseException, bucket: str) -> tuple[str, str]:
    """("fatal" | "retry" | "fail", the cause in words)."""
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        if code in _CREDENTIAL_CODES or status in (401, 403):
            return "fatal", (
                f"R2 refused the credentials ({code or status}): check R2_ACCESS_KEY_ID and "
                "R2_SECRET_ACCESS_KEY"
            )
        if code == "NoSuchBucket":
            return "fatal", f"the bucket {bucket!r} does not exist (R2_BUCKET)"
        if code in _RETRY_CODES or status >= 500 or status == 429:
            return "retry", f"R2 answered {status} {code}"
        return (
            "fail",
            f"R2 answered {status} {code}: {error.response.get('Error', {}).get('Message', '')}",
        )
    if isinstance(error, (BotoCoreError, OSError)):
        return "retry", f"the endpoint is unreachable ({type(error).__name__})"
    return "fail", f"{type(error).__name__}: {error}"


@dataclass
class Retry:
    """R2 calls tried again (retry.retrying) while ``classify`` says retrying can help:
    ``budget``: seconds of retrying after the first failure (None: until stopped)."""

    bucket: str
    budget: float | None
    stopping: threading.Event
    say: Callable[[str], None]

    def __call__(self, what: str, call: Callable[[], T]) -> T:
        def cause_of(error: Exception) -> str | None:
            if isinstance(error, KeyTaken):
                return None  # not the network's doing: the caller picks another key
            kind, cause = classify(error, self.bucket)
            if kind == "fatal":
                raise Fatal(cause) from None
            if kind == "fail":
                raise SyncError(f"{what}: {cause}") from None
            return cause

        try:
            return retrying(
                call,
                cause_of,
                Backoff(attempts=None, budget_s=self.budget),
                lambda cause, delay: self.say(
                    f"r2sync: {what}: {cause}; retrying in {delay:.0f} s"
                ),
                self.stopping,
            )
        except GaveUp as error:
            raise SyncError(f"{what}: {error.cause}") from None


@dataclass
class Store:
    """One bucket through one client and the retry: what the uploader and the index share."""

    client: Any
    bucket: str
    retry: Retry

    def head(self, key: str) -> dict[str, Any] | None:
        """The object's HEAD answer; None where there is none."""

        def head() -> dict[str, Any] | None:
            try:
                return self.client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as error:
                if error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                    return None
                raise

        return self.retry(f"HEAD {key}", head)

    def conditional(self, what: str, key: str, call: Callable[[], T]) -> T:
        """``call`` (a write with a condition) through the retry, a 412 raised as KeyTaken."""

        def attempt() -> T:
            try:
                return call()
            except ClientError as error:
                if error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 412:
                    raise KeyTaken(key) from None
                raise

        return self.retry(what, attempt)


def stored_sha256(found: dict[str, Any]) -> str | None:
    """The sha256 r2sync put in an object's metadata, from its HEAD answer. Metadata names
    travel as HTTP headers (``x-amz-meta-sha256``), which are case-insensitive: S3 and R2
    answer ``sha256``, other servers (rclone) ``Sha256``."""
    metadata = {name.lower(): value for name, value in found.get("Metadata", {}).items()}
    return metadata.get("sha256")


def holds(found: dict[str, Any] | None, size: int, sha256: str | None) -> bool:
    """Whether a HEAD answer is of an object holding these bytes (its size and the sha256
    r2sync put in its metadata)."""
    return found is not None and found["ContentLength"] == size and stored_sha256(found) == sha256


def conditional_writes(store: Store, pod: str) -> bool:
    """Whether the store refuses a PUT with If-None-Match: * where an object is: a probe
    object put twice, the second time on that condition (then deleted)."""
    key = f"{PROBE_PREFIX}{pod}-conditions-{uuid.uuid4().hex[:8]}"
    client, bucket = store.client, store.bucket
    store.retry(
        "put the conditions probe", lambda: client.put_object(Bucket=bucket, Key=key, Body=b"1")
    )
    try:
        store.conditional(
            "put the conditions probe again",
            key,
            lambda: client.put_object(Bucket=bucket, Key=key, Body=b"2", IfNoneMatch="*"),
        )
        honoured = False
    except KeyTaken:
        honoured = True
    store.retry("delete the conditions probe", lambda: client.delete_object(Bucket=bucket, Key=key))
    return honoured


def round_trip(store: Store) -> None:
    """put, head, get, delete of a probe object; SyncError/Fatal with the cause in words."""
    key = f"{PROBE_PREFIX}{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
    body = b"podforge r2sync probe\n"
    client, bucket, retry = store.client, store.bucket, store.retry
    retry("put the probe", lambda: client.put_object(Bucket=bucket, Key=key, Body=body))
    head = retry("head the probe", lambda: client.head_object(Bucket=bucket, Key=key))
    got = retry("get the probe", lambda: client.get_object(Bucket=bucket, Key=key)["Body"].read())
    retry("delete the probe", lambda: client.delete_object(Bucket=bucket, Key=key))
    if head["ContentLength"] != len(body) or got != body:
        raise SyncError("the probe came back different from what was put")
