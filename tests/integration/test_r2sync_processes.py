"""`podforge r2sync` against a real S3 server (rclone) behind the gate that enforces R2's rules.

Kills, restarts, outages and growing files; every finished output in the bucket exactly once
with the right bytes; the bytes the server received counted by the gate. No root and no pod:
r2sync, rclone and the gate run as this user's processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from conftest import s3_client, wait_for

MIB = 2**20
POD = "pod-e2e"  # RunPod's pod id, as RunPod gives it to the container


@pytest.fixture(scope="module", autouse=True)
def _clients_closed() -> Iterator[None]:
    """The module's clients (their pools of connections) closed after its last test."""
    yield
    for made in _CLIENTS.values():
        made.close()
    _CLIENTS.clear()


_CLIENTS: dict[tuple[str, str], Any] = {}


def client(s3: dict[str, Any], secret: str | None = None) -> Any:
    """One client per server and secret: each holds a pool of connections."""
    key = (s3["url"], secret or s3["secret_key"])
    if key not in _CLIENTS:
        _CLIENTS[key] = _new_client(s3, secret)
    return _CLIENTS[key]


def _new_client(s3: dict[str, Any], secret: str | None, read_timeout: float = 60) -> Any:
    return s3_client(s3, secret, read_timeout)


def gate(s3: dict[str, Any], path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(s3["url"] + path, data=data, method="POST" if data else "GET")
    return json.load(urllib.request.urlopen(request))


def env(s3: dict[str, Any], **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "R2_ENDPOINT": s3["url"],
        "R2_BUCKET": s3["bucket"],
        "R2_ACCESS_KEY_ID": s3["access_key"],
        "R2_SECRET_ACCESS_KEY": s3["secret_key"],
        "RUNPOD_POD_ID": POD,
        **extra,
    }


def r2sync(s3: dict[str, Any], *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "podforge", "r2sync", *args],
        env=env(s3, **extra),
        capture_output=True,
        text=True,
        timeout=300,
    )


def daemon(
    s3: dict[str, Any], watch: Path, journal: Path, settle: str = "0.5", **extra: str
) -> Any:
    """The daemon, its output in ``daemon.log`` beside the journal (a pipe nobody reads
    would fill up and stall it)."""
    with open(journal.with_name("daemon.log"), "a") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "podforge",
                "r2sync",
                "--watch",
                str(watch),
                "--journal",
                str(journal),
                "--settle",
                settle,
            ],
            env=env(s3, **extra),
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def write(path: Path, size: int, seed: int) -> str:
    """A file of pseudo-random bytes with an mtime in the past (finished); its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    block = hashlib.sha256(str(seed).encode()).digest() * (MIB // 32)
    data = (block * (size // len(block) + 1))[:size]
    path.write_bytes(data)
    old = time.time() - 60
    os.utime(path, (old, old))
    return hashlib.sha256(data).hexdigest()


def stored(s3: dict[str, Any], key: str) -> str | None:
    try:
        body = client(s3).get_object(Bucket=s3["bucket"], Key=key)["Body"].read()
    except ClientError:
        return None
    return hashlib.sha256(body).hexdigest()


def today() -> str:
    """The day of a first upload now (UTC): the keys' {day}."""
    return time.strftime("%Y-%m-%d", time.gmtime())


def key_for(path: Path, watch: Path, pod: str = POD) -> str:
    return f"outputs/{pod}/{today()}/{path.relative_to(watch).as_posix()}"


def index_of(s3: dict[str, Any], key: str) -> list[dict[str, Any]]:
    body = client(s3).get_object(Bucket=s3["bucket"], Key=key)["Body"].read()
    return list(json.loads(body)["objects"])


def test_the_gate_refuses_parts_r2_would_refuse(s3):
    s = client(s3)
    for sizes, code in (
        ([1 * MIB, 1 * MIB], "EntityTooSmall"),
        ([6 * MIB, 7 * MIB, MIB], "InvalidPart"),
    ):
        key = f"gate/{code}"
        upload = s.create_multipart_upload(Bucket=s3["bucket"], Key=key)["UploadId"]
        parts = []
        for number, size in enumerate(sizes, start=1):
            answer = s.upload_part(
                Bucket=s3["bucket"], Key=key, UploadId=upload, PartNumber=number, Body=b"x" * size
            )
            parts.append({"PartNumber": number, "ETag": answer["ETag"]})
        with pytest.raises(ClientError) as refused:
            s.complete_multipart_upload(
                Bucket=s3["bucket"], Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
            )
        assert refused.value.response["Error"]["Code"] == code


def test_the_servers_head_names_the_bytes_r2sync_put(s3):
    # rclone answers the metadata's name as "Sha256", R2 as "sha256": both are r2sync's own.
    from podforge.pod.r2sync.store import holds

    s, key = client(s3), "outputs/probe/metadata-case.bin"
    s.put_object(Bucket=s3["bucket"], Key=key, Body=b"abc", Metadata={"sha256": "f00d"})
    assert holds(s.head_object(Bucket=s3["bucket"], Key=key), 3, "f00d")


def test_a_put_whose_client_dies_mid_body_stores_nothing_and_holds_up_no_one(s3):
    # A daemon killed mid-PUT: R2 keeps nothing of it, and the next request for the key is
    # answered (the gate once forwarded the short body, and rclone then waited minutes for
    # the rest while every HEAD of the key queued behind it).
    import socket
    from urllib.parse import urlsplit

    key = "outputs/probe/killed-mid-body.bin"
    url = urlsplit(
        client(s3).generate_presigned_url(
            "put_object", Params={"Bucket": s3["bucket"], "Key": key}, ExpiresIn=600
        )
    )
    with socket.create_connection((url.hostname, url.port)) as killed:
        killed.sendall(
            f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Content-Length: {3 * MIB}\r\n\r\n".encode()
            + b"a" * MIB
        )
    patient = _new_client(s3, None, read_timeout=30)  # an answer, not rclone's wait
    with pytest.raises(ClientError) as missing:
        patient.head_object(Bucket=s3["bucket"], Key=key)
    assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_outputs_around_a_kill_arrive_exactly_once(s3, tmp_path):
    watch, journal = tmp_path / "output", tmp_path / "journal.sqlite"
    sums = {f"before-{i}.png": write(watch / f"before-{i}.png", 200_000 + i, i) for i in range(5)}
    first = daemon(s3, watch, journal)
    wait_for(lambda: all(stored(s3, key_for(watch / n, watch)) for n in sums))
    sums |= {
        f"during-{i}.mp4": write(watch / f"during-{i}.mp4", 3 * MIB + i, 10 + i) for i in range(3)
    }
    time.sleep(0.3)
    first.send_signal(signal.SIGKILL)
    first.wait()
    sums |= {
        f"after/{i}.png": write(watch / "after" / f"{i}.png", 100_000 + i, 20 + i) for i in range(3)
    }
    second = daemon(s3, watch, journal)
    ours = [key_for(watch / name, watch) for name in sums]
    index = f"outputs/{POD}/{today()}/metadata.json"
    try:
        wait_for(
            lambda: all(stored(s3, key_for(watch / n, watch)) == sha for n, sha in sums.items())
        )
        # The index follows the uploads (after each round): it lists them all.
        wait_for(lambda: set(ours) <= {entry["key"] for entry in index_of(s3, index)})
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0  # SIGTERM: a clean stop
    listed = index_of(s3, index)
    keys = [entry["key"] for entry in listed]
    assert sorted(k for k in keys if k in ours) == sorted(ours)  # each listed once
    by_key = {entry["key"]: entry for entry in listed}
    for name, sha in sums.items():
        assert by_key[key_for(watch / name, watch)]["sha256"] == sha


def test_a_killed_multipart_upload_resumes_without_resending(s3, tmp_path):
    watch, journal = tmp_path / "output", tmp_path / "journal.sqlite"
    size = 200 * MIB
    sha = write(watch / "video.mp4", size, 7)
    key = key_for(watch / "video.mp4", watch)
    counted = f"{s3['bucket']}/{key}"
    gate(s3, "/_gate/stats/clear", {})
    gate(s3, "/_gate/outage", {"down": False})
    # Half way the gate holds every further request for the key unanswered: the kill comes
    # mid-upload however fast or loaded this machine is.
    gate(s3, "/_gate/hold", {"key": counted, "after_bytes": size // 2})
    first = daemon(s3, watch, journal)
    try:
        wait_for(lambda: gate(s3, "/_gate/stats")["held"] > 0)
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        gate(s3, "/_gate/hold", {})
    before = gate(s3, "/_gate/stats")["bytes_in"][counted]
    assert size // 2 <= before < size
    done = r2sync(s3, "--watch", str(watch), "--journal", str(journal), "--once")
    assert done.returncode == 0, done.stderr
    assert "resuming video.mp4" in done.stdout
    assert stored(s3, key) == sha
    after = gate(s3, "/_gate/stats")["bytes_in"][counted]
    part = 8 * MIB
    # What the resumed run sent: the rest, plus at most the parts held at the kill.
    assert after - before <= size - before + 4 * part
    # Nothing refused but the probe that asks whether the store honours conditions.
    refused = gate(s3, "/_gate/stats")["refused"]
    assert [line for line in refused if "/podforge-probe/" not in line] == []


def test_an_outage_loses_nothing_and_catches_up(s3, tmp_path):
    watch, journal = tmp_path / "output", tmp_path / "journal.sqlite"
    sums = {f"{i}.png": write(watch / f"{i}.png", 50_000 + i, 30 + i) for i in range(3)}
    running = daemon(s3, watch, journal)
    try:
        wait_for(lambda: all(stored(s3, key_for(watch / n, watch)) for n in sums))
        gate(s3, "/_gate/outage", {"down": True})
        sums |= {
            f"late-{i}.png": write(watch / f"late-{i}.png", 60_000 + i, 40 + i) for i in range(3)
        }
        time.sleep(4)  # the daemon meets the outage and backs off
        gate(s3, "/_gate/outage", {"down": False})
        wait_for(
            lambda: all(stored(s3, key_for(watch / n, watch)) == sha for n, sha in sums.items()),
            timeout=90,
        )
    finally:
        gate(s3, "/_gate/outage", {"down": False})
        running.send_signal(signal.SIGTERM)
        running.wait(timeout=30)
    output = journal.with_name("daemon.log").read_text()
    assert "unreachable" in output and "retrying" in output


def test_a_file_still_being_written_is_not_uploaded_half(s3, tmp_path):
    watch, journal = tmp_path / "output", tmp_path / "journal.sqlite"
    growing = watch / "render.mp4"
    finished = tmp_path / "finish-writing"
    watch.mkdir(parents=True)
    # The writer keeps the file open until the test lets it finish: however slow r2sync's
    # start is on a loaded machine, the file is still being written when it looks.
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys, time\n"
            "with open(sys.argv[1], 'wb') as f:\n"
            "    while not os.path.exists(sys.argv[2]):\n"
            "        f.write(b'x' * 65536); f.flush(); time.sleep(0.1)\n",
            str(growing),
            str(finished),
        ]
    )
    try:
        wait_for(lambda: growing.exists() and growing.stat().st_size > 0)
        os.utime(growing, (time.time() - 60, time.time() - 60))  # looks settled; still open
        early = r2sync(
            s3, "--watch", str(watch), "--journal", str(journal), "--once", "--settle", "0.5"
        )
        assert early.returncode == 0, early.stderr
        assert early.stdout.splitlines()[-1].endswith("1 not finished yet (left for later)")
        assert stored(s3, key_for(growing, watch)) is None
    finally:
        finished.touch()
        writer.wait(timeout=30)
    time.sleep(0.6)
    late = r2sync(s3, "--watch", str(watch), "--journal", str(journal), "--once", "--settle", "0.5")
    assert late.returncode == 0, late.stderr
    data = growing.read_bytes()
    assert data and len(data) % 65536 == 0  # whole: every chunk the writer wrote
    assert stored(s3, key_for(growing, watch)) == hashlib.sha256(data).hexdigest()


def test_a_changed_file_is_uploaded_again_under_its_key(s3, tmp_path):
    watch, journal = tmp_path / "output", tmp_path / "journal.sqlite"
    first = write(watch / "edit.png", 10_000, 1)
    # Rendered two days ago, edited today: its mtime crosses midnight, its key stays the
    # first upload's (today's), not the mtime's day.
    two_days_ago = time.time() - 2 * 86_400
    os.utime(watch / "edit.png", (two_days_ago, two_days_ago))
    key = key_for(watch / "edit.png", watch)
    assert r2sync(s3, "--watch", str(watch), "--journal", str(journal), "--once").returncode == 0
    assert stored(s3, key) == first
    second = write(watch / "edit.png", 12_000, 2)
    done = r2sync(s3, "--watch", str(watch), "--journal", str(journal), "--once")
    assert done.returncode == 0 and f"uploaded {key}" in done.stdout, done.stderr
    assert stored(s3, key) == second  # this pod's own object, replaced (If-Match: its ETag)
    again = r2sync(s3, "--watch", str(watch), "--journal", str(journal), "--once")
    assert "0 uploaded" in again.stdout


def test_two_pods_writing_one_name_on_one_day_lose_nothing(s3, tmp_path):
    # ComfyUI numbers outputs per instance: both pods write ComfyUI_00001_.png today.
    sums = {}
    for pod in ("pod-a", "pod-b"):
        watch = tmp_path / pod / "output"
        sums[pod] = write(watch / "ComfyUI_00001_.png", 40_000, len(sums) + 1)
        done = r2sync(
            s3, "--watch", str(watch), "--journal", str(tmp_path / pod / "j.sqlite"), "--once",
            RUNPOD_POD_ID=pod,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    assert sums["pod-a"] != sums["pod-b"]
    for pod, sha in sums.items():
        assert stored(s3, f"outputs/{pod}/{today()}/ComfyUI_00001_.png") == sha  # byte-exact
        (entry,) = index_of(s3, f"outputs/{pod}/{today()}/metadata.json")
        assert (entry["pod"], entry["sha256"]) == (pod, sha)


def test_a_key_another_writer_holds_is_never_overwritten(s3, tmp_path):
    # Two writers under one name (pods given one pod_name, or a layout without the pod):
    # the second's file goes to a numbered name; the first's object stays as it was.
    sums = {}
    for writer in ("first", "second"):
        watch = tmp_path / writer / "output"
        sums[writer] = write(watch / "shot.png", 30_000, len(writer))
        done = r2sync(
            s3, "--watch", str(watch), "--journal", str(tmp_path / writer / "j.sqlite"), "--once",
            RUNPOD_POD_ID="shared",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    key = f"outputs/shared/{today()}/shot.png"
    numbered = f"outputs/shared/{today()}/shot (2).png"
    assert stored(s3, key) == sums["first"]
    assert stored(s3, numbered) == sums["second"]
    assert f"r2sync: {key} holds another writer's object; shot.png -> {numbered}" in done.stdout
    # The journal keeps the numbered key: nothing is sent again, and an edit goes there too.
    again = r2sync(
        s3, "--watch", str(tmp_path / "second" / "output"), "--journal",
        str(tmp_path / "second" / "j.sqlite"), "--once", RUNPOD_POD_ID="shared",
    )  # fmt: skip
    assert "0 uploaded" in again.stdout
    assert {e["key"] for e in index_of(s3, f"outputs/shared/{today()}/metadata.json")} == {
        key,
        numbered,
    }


def test_index_writers_racing_list_every_entry(s3, tmp_path):
    # Eight writers of one index object at once (one pod name): a compare-and-swap each.
    writers = []
    names = [f"race-{i}.png" for i in range(8)]
    for name in names:
        watch = tmp_path / name / "output"
        write(watch / name, 5_000, len(name))
        writers.append(
            subprocess.Popen(
                [
                    sys.executable, "-m", "podforge", "r2sync", "--watch", str(watch),
                    "--journal", str(tmp_path / name / "j.sqlite"), "--once",
                ],
                env=env(s3, RUNPOD_POD_ID="racers"),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )  # fmt: skip
    for writer in writers:
        out, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
    listed = {e["key"] for e in index_of(s3, f"outputs/racers/{today()}/metadata.json")}
    assert listed == {f"outputs/racers/{today()}/{name}" for name in names}


def test_the_list_merges_every_pods_index_and_the_old_layout(s3, tmp_path):
    # An object and index as r2sync wrote them before keys named the pod.
    old = {"key": "outputs/2026-11-30/ComfyUI_00007_.png", "size": 3, "sha256": "ab" * 32}
    s = client(s3)
    s.put_object(Bucket=s3["bucket"], Key=old["key"], Body=b"old")
    s.put_object(
        Bucket=s3["bucket"],
        Key="outputs/2026-11-30/metadata.json",
        Body=json.dumps({"objects": [old]}).encode(),
    )
    watch = tmp_path / "output"
    write(watch / "new.png", 2_000, 5)
    done = r2sync(s3, "--watch", str(watch), "--journal", str(tmp_path / "j.sqlite"), "--once")
    assert done.returncode == 0, done.stderr
    listed = r2sync(s3, "--list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert any(line.startswith(f"{old['key']} 3 ") for line in lines)
    assert any(line.startswith(f"outputs/{POD}/{today()}/new.png 2000 ") for line in lines)
    one_day = r2sync(s3, "--list", "--day", "2026-11-30").stdout.splitlines()
    assert [line.split()[0] for line in one_day] == [old["key"]]


def test_wrong_credentials_fail_in_words_without_the_secret(s3, tmp_path):
    secret = "wrong-secret-e2e-value"
    watch = tmp_path / "output"
    write(watch / "a.png", 1000, 3)
    env_file = tmp_path / "r2.env"
    env_file.write_text(
        f"R2_ENDPOINT={s3['url']}\nR2_BUCKET={s3['bucket']}\n"
        f"R2_ACCESS_KEY_ID={s3['access_key']}\nR2_SECRET_ACCESS_KEY={secret}\n"
    )
    env_file.chmod(0o600)
    base = {"PATH": os.environ["PATH"], "R2_ENV_FILE": str(env_file)}
    for args in (["--test"], ["--watch", str(watch), "--once"]):
        process = subprocess.Popen(
            [sys.executable, "-m", "podforge", "r2sync", *args],
            env=base,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        argv = Path(f"/proc/{process.pid}/cmdline").read_bytes()
        out, err = process.communicate(timeout=60)
        assert process.returncode != 0
        assert "R2 refused the credentials" in err
        assert secret not in out + err and secret.encode() not in argv
    env_file.chmod(0o644)
    refused = subprocess.run(
        [sys.executable, "-m", "podforge", "r2sync", "--test"],
        env=base,
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0 and "must be 0600" in refused.stderr
    assert secret not in refused.stdout + refused.stderr
    # Nothing the sync wrote (journal beside the outputs) is world-readable with the key in it.
    for path in tmp_path.rglob("*"):
        if path.is_file() and path != env_file:
            assert secret.encode() not in path.read_bytes()


def test_an_output_named_like_the_index_never_takes_its_place(s3, tmp_path):
    watch = tmp_path / "output"
    sha = write(watch / "metadata.json", 700, 9)
    done = r2sync(
        s3, "--watch", str(watch), "--journal", str(tmp_path / "j.sqlite"), "--once",
        RUNPOD_POD_ID="pod-meta",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert stored(s3, f"outputs/pod-meta/{today()}/metadata (2).json") == sha
    (entry,) = index_of(s3, f"outputs/pod-meta/{today()}/metadata.json")
    assert entry["key"] == f"outputs/pod-meta/{today()}/metadata (2).json"


def test_an_upload_a_kill_left_unlisted_is_listed_by_the_next_round(s3, tmp_path):
    import sqlite3

    watch, journal = tmp_path / "output", tmp_path / "journal.sqlite"
    write(watch / "late.png", 20_000, 99)
    key = key_for(watch / "late.png", watch)
    index = f"outputs/{POD}/{today()}/metadata.json"
    assert r2sync(s3, "--watch", str(watch), "--journal", str(journal), "--once").returncode == 0
    # As a kill between the upload and the index write leaves it: uploaded, not listed.
    with sqlite3.connect(journal) as db:
        db.execute("UPDATE index_entries SET listed = 0 WHERE key = ?", (key,))
    before = [entry for entry in index_of(s3, index) if entry["key"] != key]
    client(s3).put_object(
        Bucket=s3["bucket"], Key=index, Body=json.dumps({"objects": before}).encode()
    )
    running = daemon(s3, watch, journal)
    try:
        wait_for(lambda: key in {entry["key"] for entry in index_of(s3, index)}, timeout=30)
    finally:
        running.send_signal(signal.SIGTERM)
        assert running.wait(timeout=30) == 0
    assert "uploaded" not in journal.with_name("daemon.log").read_text()  # nothing sent again
