"""The index objects: each pod's day lists what it uploaded (``metadata.json`` beside the
outputs: key, size, sha256, pod, GPU, time), merged by compare-and-swap so that writers of
one index lose no entry; ``--list`` reads them all back."""

from __future__ import annotations

import json
import random
import time
from typing import Any

from botocore.exceptions import ClientError

from podforge.core.keys import INDEX_NAME
from podforge.pod.r2sync.journal import Journal
from podforge.pod.r2sync.settings import Fatal, SyncError
from podforge.pod.r2sync.store import KeyTaken, Store

# Index merges to attempt in a row before the round gives up on that index.
INDEX_ATTEMPTS = 20


def publish_indexes(store: Store, journal: Journal, conditional: bool | None) -> dict[str, str]:
    """Merge this pod's new entries into each index object they belong in, then read it
    back: an entry is marked listed only once the bucket's copy shows it. Returns the
    indexes that failed (their entries stay unlisted and are tried again next round)."""
    failures: dict[str, str] = {}
    keys = [
        row[0]
        for row in journal.run("SELECT DISTINCT index_key FROM index_entries WHERE listed = 0")
    ]
    for key in keys:
        try:
            _publish_index(store, journal, conditional, key)
        except Fatal:
            raise
        except SyncError as error:
            failures[key] = str(error)
    return failures


def _publish_index(store: Store, journal: Journal, conditional: bool | None, key: str) -> None:
    """Read, merge, write back only if nobody wrote in between (If-Match on the ETag
    read, or If-None-Match for a new index), else read again: a compare-and-swap, so
    several writers of one index (the old layout's shared one, pods sharing a name)
    lose no entry."""
    ours = {
        row[0]: json.loads(row[1])
        for row in journal.run("SELECT key, entry FROM index_entries WHERE index_key = ?", key)
    }
    for _ in range(INDEX_ATTEMPTS):
        listed, etag = read_index(store, key)
        merged = {entry["key"]: entry for entry in listed}
        merged.update(ours)
        body = json.dumps({"objects": [merged[k] for k in sorted(merged)]}, indent=2).encode()
        condition = {} if not conditional else {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        try:
            store.conditional(
                f"PUT {key}",
                key,
                lambda body=body, condition=condition: store.client.put_object(
                    Bucket=store.bucket,
                    Key=key,
                    Body=body,
                    ContentType="application/json",
                    **condition,
                ),
            )
        except KeyTaken:
            time.sleep(random.uniform(0.01, 0.2))  # another writer won: merge again
            continue
        break
    else:
        raise SyncError(f"{key}: {INDEX_ATTEMPTS} writers in a row won the index first")
    present = {entry["key"] for entry in read_index(store, key)[0]}
    for object_key_ in ours:
        if object_key_ in present:
            journal.run(
                "UPDATE index_entries SET listed = 1 WHERE index_key = ? AND key = ?",
                key,
                object_key_,
            )


def read_index(store: Store, key: str) -> tuple[list[dict[str, Any]], str | None]:
    """(its entries, its ETag) of an index object; ([], None) when there is none."""

    def get() -> tuple[list[dict[str, Any]], str | None]:
        try:
            answer = store.client.get_object(Bucket=store.bucket, Key=key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return [], None
            raise
        try:
            objects = json.loads(answer["Body"].read())["objects"]
        except (ValueError, KeyError, TypeError):
            raise SyncError(f"{key} is no r2sync index (written by something else)") from None
        return list(objects), answer.get("ETag")

    return store.retry(f"GET {key}", get)


def listed_outputs(store: Store, day: str | None) -> list[dict[str, Any]]:
    """Every entry of every index object under outputs/ (each pod's, and the old layout's
    one per day), merged by key; only ``day``'s indexes when given."""
    paginator = store.client.get_paginator("list_objects_v2")
    pages = store.retry(
        "list outputs/",
        lambda: list(paginator.paginate(Bucket=store.bucket, Prefix="outputs/")),
    )
    indexes = [
        item["Key"]
        for page in pages
        for item in page.get("Contents", [])
        if item["Key"].endswith(f"/{INDEX_NAME}")
        and (day is None or f"/{day}/" in f"/{item['Key']}")
    ]
    merged: dict[str, dict[str, Any]] = {}
    for key in indexes:
        body = store.retry(
            f"GET {key}",
            lambda key=key: store.client.get_object(Bucket=store.bucket, Key=key)["Body"].read(),
        )
        try:
            objects = json.loads(body)["objects"]
        except (ValueError, KeyError, TypeError):
            raise SyncError(f"{key} is no r2sync index") from None
        merged.update({entry["key"]: entry for entry in objects})
    return [merged[key] for key in sorted(merged)]
