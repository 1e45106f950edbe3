"""The sandbox's hub and S3 behave like the real ones for the real clients."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from e2e.conftest import GATED_REPO, HUB_TOKEN

pytestmark = [pytest.mark.e2e, pytest.mark.podless]

REPO = "yzd-v/DWPose"
FILE = "dw-ll_ucoco_384.onnx"


def test_huggingface_hub_downloads_from_the_hub(sandbox, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", sandbox["hub"]["url"])
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", sandbox["hub"]["url"])
    monkeypatch.setattr(
        constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        sandbox["hub"]["url"] + "/{repo_id}/resolve/{revision}/{filename}",
    )
    path = huggingface_hub.hf_hub_download(REPO, FILE, local_dir=tmp_path / "out")
    data = open(path, "rb").read()
    url = f"{sandbox['hub']['url']}/{REPO}/resolve/main/{FILE}"
    head = urllib.request.urlopen(urllib.request.Request(url, method="HEAD"))
    assert head.headers["X-Linked-Etag"].strip('"') == hashlib.sha256(data).hexdigest()
    assert int(head.headers["X-Linked-Size"]) == len(data) > 0
    assert len(head.headers["X-Repo-Commit"]) == 40


def test_range_requests_get_206(sandbox):
    url = f"{sandbox['hub']['url']}/{REPO}/resolve/main/{FILE}"
    whole = urllib.request.urlopen(url).read()
    part = urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=100-"}))
    assert part.status == 206
    assert part.read() == whole[100:]
    log = json.load(urllib.request.urlopen(sandbox["hub"]["url"] + "/_control/log"))
    assert any(entry["range"] == "bytes=100-" for entry in log)


def test_api_model_info_and_tree(sandbox):
    info = json.load(urllib.request.urlopen(f"{sandbox['hub']['url']}/api/models/{REPO}"))
    assert FILE in [s["rfilename"] for s in info["siblings"]]
    tree = json.load(urllib.request.urlopen(f"{sandbox['hub']['url']}/api/models/{REPO}/tree/main"))
    entry = next(e for e in tree if e["path"] == FILE)
    assert entry["lfs"]["size"] == entry["size"] > 0


def test_gated_repo_needs_the_token(sandbox):
    url = f"{sandbox['hub']['url']}/api/models/{GATED_REPO}"
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(url)
    assert denied.value.code == 401
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {HUB_TOKEN}"})
    assert json.load(urllib.request.urlopen(request))["id"] == GATED_REPO


def _s3(sandbox, secret):
    return boto3.client(
        "s3",
        endpoint_url=sandbox["s3"]["url"],
        aws_access_key_id=sandbox["s3"]["access_key"],
        aws_secret_access_key=secret,
        region_name="auto",
        config=Config(
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def test_s3_stores_objects_as_files(sandbox):
    client = _s3(sandbox, sandbox["s3"]["secret_key"])
    client.put_object(Bucket=sandbox["s3"]["bucket"], Key="outputs/a.txt", Body=b"frame")
    got = client.get_object(Bucket=sandbox["s3"]["bucket"], Key="outputs/a.txt")
    assert got["Body"].read() == b"frame"
    stored = f"{sandbox['s3']['dir']}/{sandbox['s3']['bucket']}/outputs/a.txt"
    assert open(stored, "rb").read() == b"frame"


def test_s3_rejects_a_wrong_secret(sandbox):
    client = _s3(sandbox, "not-the-secret")
    with pytest.raises(ClientError) as denied:
        client.put_object(Bucket=sandbox["s3"]["bucket"], Key="x", Body=b"x")
    assert denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
