"""r2sync's parts without a server: settings, part sizes, error classes, the journal, and the
store's logic against botocore's Stubber."""

from __future__ import annotations

import os
import threading
import time

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from podforge.pod.r2sync.journal import Journal
from podforge.pod.r2sync.settings import Fatal, SyncError, r2_settings
from podforge.pod.r2sync.store import (
    KeyTaken,
    Retry,
    Store,
    classify,
    conditional_writes,
    holds,
    make_client,
)
from podforge.pod.r2sync.uploader import MAX_PARTS, MIB, MIN_PART, part_size_for

ENV = {
    "R2_ENDPOINT": "https://acct.r2.cloudflarestorage.com",
    "R2_ACCESS_KEY_ID": "id",
    "R2_SECRET_ACCESS_KEY": "s3cr3t",
}


def test_settings_from_the_environment_with_the_seeds_names():
    settings = r2_settings(ENV)
    assert (settings.endpoint, settings.bucket) == (ENV["R2_ENDPOINT"], "runpod")
    assert "s3cr3t" not in repr(settings)


def test_missing_settings_are_named():
    with pytest.raises(Fatal, match="R2_ENDPOINT, R2_SECRET_ACCESS_KEY not set"):
        r2_settings({"R2_ACCESS_KEY_ID": "id"})


def test_an_env_file_must_be_private(tmp_path):
    env_file = tmp_path / "r2.env"
    env_file.write_text("".join(f"export {k}='{v}'\n" for k, v in ENV.items()) + "R2_BUCKET=b\n")
    os.chmod(env_file, 0o640)
    with pytest.raises(Fatal, match="mode 0640.*chmod 600"):
        r2_settings({"R2_ENV_FILE": str(env_file)})
    os.chmod(env_file, 0o600)
    settings = r2_settings({"R2_ENV_FILE": str(env_file)})
    assert (settings.secret_access_key, settings.bucket) == ("s3cr3t", "b")


@pytest.mark.parametrize(
    ("size", "part"),
    [
        (40 * MIB, MIN_PART),
        (80 * 10**9, 8 * MIB),  # 80 GB: 9,537 parts of 8 MiB
        (200 * 10**9, 20 * MIB),  # beyond 10,000 parts of 8 MiB: whole MiB, fewer parts
    ],
)
def test_parts_are_equal_whole_mib_and_at_most_ten_thousand(size, part):
    assert part_size_for(size) == part
    assert -(-size // part) <= MAX_PARTS and part % MIB == 0 and part >= 5 * MIB


def _client_error(status: int, code: str) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutObject",
    )


@pytest.mark.parametrize(
    ("error", "kind", "words"),
    [
        (_client_error(403, "SignatureDoesNotMatch"), "fatal", "refused the credentials"),
        (_client_error(403, "InvalidAccessKeyId"), "fatal", "R2_ACCESS_KEY_ID"),
        (_client_error(404, "NoSuchBucket"), "fatal", "bucket 'b' does not exist"),
        (_client_error(503, "SlowDown"), "retry", "503 SlowDown"),
        (_client_error(500, "InternalError"), "retry", "500"),
        (_client_error(429, "TooManyRequests"), "retry", "429"),
        (EndpointConnectionError(endpoint_url="https://x"), "retry", "unreachable"),
        (_client_error(400, "BadDigest"), "fail", "400 BadDigest"),
    ],
)
def test_errors_are_classified(error, kind, words):
    got_kind, cause = classify(error, "b")
    assert got_kind == kind and words in cause


def test_a_journal_from_before_keys_named_the_pod_keeps_its_keys_and_index(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE files (path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER"
        " NOT NULL, sha256 TEXT, key TEXT NOT NULL, state TEXT NOT NULL, upload_id TEXT,"
        " part_size INTEGER, uploaded_at TEXT);"
        "CREATE TABLE day_entries (day TEXT NOT NULL, key TEXT NOT NULL, entry TEXT NOT NULL,"
        " listed INTEGER NOT NULL, PRIMARY KEY (day, key));"
        "INSERT INTO files VALUES ('/o/a.png', 1, 2, 'ab', 'outputs/2026-11-21/a.png', 'done',"
        " NULL, NULL, 'x');"
        "INSERT INTO day_entries VALUES ('2026-11-21', 'outputs/2026-11-21/a.png', '{}', 0);"
    )
    old.commit()
    old.close()
    journal = Journal(path)
    record = journal.record("/o/a.png")
    assert record is not None
    assert (record.key, record.index_key, record.etag) == (
        "outputs/2026-11-21/a.png",
        "outputs/2026-11-21/metadata.json",
        None,
    )
    assert journal.run("SELECT index_key, key, listed FROM index_entries") == [
        ("outputs/2026-11-21/metadata.json", "outputs/2026-11-21/a.png", 0)
    ]


def test_slow_failures_are_retried_and_the_budget_counts_from_the_first():
    said: list[str] = []
    retry = Retry("b", budget=0.2, stopping=threading.Event(), say=said.append)
    attempts: list[float] = []

    def stalls_twice() -> str:
        attempts.append(time.monotonic())
        if len(attempts) <= 2:
            time.sleep(0.4)  # longer than the budget, then the server drops the connection
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")
        return "stored"

    assert retry("PUT part 14", stalls_twice) == "stored"
    assert len(attempts) == 3 and said == [
        "r2sync: PUT part 14: the endpoint is unreachable (EndpointConnectionError); "
        f"retrying in {delay} s"
        for delay in (0, 1)
    ]

    def always_down() -> str:
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")

    began = time.monotonic()
    with pytest.raises(SyncError, match="PUT part 15: the endpoint is unreachable"):
        retry("PUT part 15", always_down)
    assert time.monotonic() - began < 5  # the budget, plus at most one backoff


# -- the store's logic against botocore's Stubber: the S3 answers as R2 gives them ----------


@pytest.fixture
def stubbed():
    from botocore.stub import Stubber

    settings = r2_settings(ENV)
    client = make_client(settings)
    retry = Retry(settings.bucket, budget=1.0, stopping=threading.Event(), say=lambda _: None)
    with Stubber(client) as stubber:
        yield Store(client, settings.bucket, retry), stubber
        stubber.assert_no_pending_responses()


def precondition_failed(stubber, method: str) -> None:
    stubber.add_client_error(
        method, "PreconditionFailed", "At least one of the pre-conditions did not hold", 412
    )


@pytest.mark.parametrize("honours", [True, False])
def test_the_conditions_probe_reads_a_412_as_honoured(stubbed, honours):
    store, stubber = stubbed
    stubber.add_response("put_object", {"ETag": '"1"'})
    if honours:
        precondition_failed(stubber, "put_object")
    else:  # rclone: the conditional put overwrites
        stubber.add_response("put_object", {"ETag": '"2"'})
    stubber.add_response("delete_object", {})
    assert conditional_writes(store, "pod-1") is honours


def test_a_refused_condition_is_a_taken_key_and_is_not_retried(stubbed):
    store, stubber = stubbed
    precondition_failed(stubber, "put_object")
    calls = []

    def put() -> object:
        calls.append(1)
        return store.client.put_object(Bucket="runpod", Key="k", Body=b"x", IfNoneMatch="*")

    with pytest.raises(KeyTaken):
        store.conditional("PUT k", "k", put)
    assert calls == [1]


def test_head_of_a_missing_key_is_none_and_a_server_error_is_retried(stubbed):
    store, stubber = stubbed
    stubber.add_client_error("head_object", "404", "Not Found", 404)
    assert store.head("absent") is None
    stubber.add_client_error("head_object", "InternalError", "try again", 500)
    stubber.add_response(
        "head_object", {"ContentLength": 3, "ETag": '"e"', "Metadata": {"sha256": "abc"}}
    )
    found = store.head("there")
    assert holds(found, 3, "abc") and not holds(found, 3, "other") and not holds(None, 3, "abc")


@pytest.mark.parametrize("name", ["sha256", "Sha256", "SHA256"])
def test_the_stored_sha256_is_found_whatever_case_the_server_gives_its_name(name):
    # x-amz-meta-* are HTTP headers: R2 answers "sha256", rclone "Sha256".
    found = {"ContentLength": 3, "ETag": '"e"', "Metadata": {name: "abc"}}
    assert holds(found, 3, "abc") and not holds(found, 4, "abc")


def test_credentials_refused_stop_at_once_naming_the_settings_never_the_secret(stubbed):
    store, stubber = stubbed
    stubber.add_client_error("head_object", "InvalidAccessKeyId", "no such key id", 403)
    with pytest.raises(Fatal) as stopped:
        store.head("k")
    assert "R2_ACCESS_KEY_ID" in str(stopped.value) and "s3cr3t" not in str(stopped.value)


def test_a_predecessors_put_landing_late_is_adopted_not_uploaded_again(stubbed, tmp_path):
    # A daemon killed mid-PUT: its journal says "uploading", its object was not yet there
    # when the next daemon looked, and landed before that daemon's own conditional PUT.
    # The key holds these very bytes: the upload is done under its own name, not renamed.
    import hashlib
    from pathlib import Path

    from podforge.pod.r2sync.uploader import Syncer
    from podforge.pod.r2sync.watcher import Candidate

    store, stubber = stubbed
    output = tmp_path / "output" / "clip.mp4"
    output.parent.mkdir()
    output.write_bytes(b"frames" * 1000)
    sha256, stat = hashlib.sha256(output.read_bytes()).hexdigest(), output.stat()
    key, index = "outputs/pod-1/2026-12-02/clip.mp4", "outputs/pod-1/2026-12-02/metadata.json"
    journal = Journal(tmp_path / "journal.sqlite")
    journal.start(str(output), stat.st_size, stat.st_mtime_ns, sha256, key, index, None)
    said: list[str] = []
    syncer = Syncer(
        r2_settings(ENV), store, journal, [output.parent], 0.0, threading.Event(),
        Path(tmp_path / "journal.sqlite"), "pod-1", "H100", say=said.append, conditional=True,
    )  # fmt: skip
    ours = {"ContentLength": stat.st_size, "ETag": '"late"', "Metadata": {"sha256": sha256}}
    bucket = store.bucket
    stubber.add_client_error("head_object", "404", "Not Found", 404)  # not there yet
    precondition_failed(stubber, "put_object")  # ... and there by the time of our PUT
    stubber.add_response("head_object", ours, {"Bucket": bucket, "Key": key})
    syncer.upload(Candidate(str(output), "clip.mp4", stat.st_size, stat.st_mtime_ns))
    record = journal.record(str(output))
    assert record is not None
    assert (record.key, record.state, record.etag) == (key, "done", '"late"')
    assert said == [f"uploaded {key} ({stat.st_size} bytes)"]
    assert journal.run("SELECT key, listed FROM index_entries") == [(key, 0)]
