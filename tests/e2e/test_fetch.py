"""The pod-side fetcher against the sandbox hub: exact bytes, resume, faults, disk, locks, Xet."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from podforge.core.plan import PlannedModel
from podforge.pod.fetch import FetchError, Sources, fetch_all
from podforge.pod.retry import Backoff
from podforge.pod.stamps import stamp_path
from sandbox import control
from sandbox.hub import CIVITAI_VERSIONS, civitai_key, plain_key

# The fetcher's tries, with delays short enough for tests.
QUICK = Backoff(attempts=6, first_delay_s=0.01)


def _tries(attempts: int) -> Backoff:
    return Backoff(attempts=attempts, first_delay_s=0.01)


pytestmark = [pytest.mark.e2e, pytest.mark.podless]

BIG = ("Kijai/WanVideo_comfy", "SteadyDancer/Wan21_I2V_SteadyDancer_fp16.safetensors")
BIG_SIZE = 48 * 2**20
SMALL = [
    ("yzd-v/DWPose", "dw-ll_ucoco_384.onnx"),
    ("yzd-v/DWPose", "yolox_l.onnx"),
    ("Comfy-Org/Wan_2.1_ComfyUI_repackaged", "split_files/vae/wan_2.1_vae.safetensors"),
]
REPO_ROOT = Path(__file__).resolve().parents[2]
# A plain-URL file large enough for 8 connections, in pieces of 20 MiB.
RANGED = "sandbox_big.bin"
RANGED_SIZE = 160 * 2**20
PIECE = 20 * 2**20


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    base = tmp_path_factory.mktemp("hub")
    (base / "logs").mkdir()
    sizes = {BIG[1]: BIG_SIZE, plain_key(RANGED): RANGED_SIZE}
    info = control.start_hub(base, base / "logs", 3 * 2**20, sizes, None, [])
    yield info | {"dir": base / "hub"}
    control.stop_process(info["pid"])


def _post(hub, path, body):
    request = urllib.request.Request(
        hub["url"] + path, data=json.dumps(body).encode(), method="POST"
    )
    urllib.request.urlopen(request).read()


@pytest.fixture(autouse=True)
def clean_hub(hub):
    _post(hub, "/_control/faults", {})
    _post(hub, "/_control/xet", {"enabled": False})
    _post(hub, "/_control/log/clear", {})
    yield
    _post(hub, "/_control/faults", {})


def _log(hub):
    return json.load(urllib.request.urlopen(hub["url"] + "/_control/log"))


def _gets(hub, path):
    return [e for e in _log(hub) if e["method"] == "GET" and e["path"].endswith(path)]


def _hub_sha(hub, repo, path):
    request = urllib.request.Request(f"{hub['url']}/{repo}/resolve/main/{path}", method="HEAD")
    return urllib.request.urlopen(request).headers["X-Linked-Etag"].strip('"')


def _manifest(models: Path, files):
    return [
        {
            "repo": repo,
            "revision": "main",
            "path": path,
            "dest": str(models / Path(path).name),
            "bytes": None,
            "sha256": None,
        }
        for repo, path in files
    ]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextlib.contextmanager
def _tmpfs(path: Path, size: str):
    """A small filesystem of its own at ``path`` (root only), unmounted even on failure."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def _fetch(hub, manifest, sources: Sources | None = None, **options):
    options.setdefault("backoff", QUICK)
    return fetch_all(
        [PlannedModel.model_validate(entry) for entry in manifest],
        sources or Sources(hub["url"], civitai_endpoint=hub["url"]),
        **options,
    )


def test_fresh_fetch_is_byte_exact_and_stamped(hub, tmp_path):
    manifest = _manifest(tmp_path, SMALL)
    results = _fetch(hub, manifest)
    assert set(results.values()) == {"fetched"}
    for entry, (repo, path) in zip(manifest, SMALL, strict=True):
        dest = Path(entry["dest"])
        assert _sha(dest) == _hub_sha(hub, repo, path)
        assert json.loads(Path(stamp_path(str(dest))).read_text())["sha256"] == _sha(dest)
    assert not list(tmp_path.glob("*.partial"))


def test_second_fetch_downloads_nothing(hub, tmp_path):
    manifest = _manifest(tmp_path, SMALL)
    _fetch(hub, manifest)
    _post(hub, "/_control/log/clear", {})
    assert set(_fetch(hub, manifest).values()) == {"present"}
    assert _log(hub) == []


def test_a_changed_file_is_fetched_again(hub, tmp_path):
    manifest = _manifest(tmp_path, SMALL[:1])
    _fetch(hub, manifest)
    dest = Path(manifest[0]["dest"])
    dest.write_bytes(b"damaged")
    assert _fetch(hub, manifest)[str(dest)] == "fetched"
    assert _sha(dest) == _hub_sha(hub, *SMALL[0])


def _cli_fetch(hub, manifest_file: Path, *options: str, **env_vars: str) -> subprocess.Popen[str]:
    env = dict(
        os.environ,
        HF_ENDPOINT=hub["url"],
        CIVITAI_ENDPOINT=hub["url"],
        PYTHONPATH=str(REPO_ROOT),
        **env_vars,
    )
    return subprocess.Popen(
        [sys.executable, "-m", "podforge", "fetch", str(manifest_file), *options],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_killed_one_stream_fetch_resumes_with_range(hub, tmp_path):
    manifest_file = tmp_path / "manifest.json"
    manifest = _manifest(tmp_path / "models", [BIG])
    manifest_file.write_text(json.dumps(manifest))
    partial = tmp_path / "models" / (Path(BIG[1]).name + ".partial")
    _post(hub, "/_control/faults", {"throttle_bps": 16 * 2**20})
    first = _cli_fetch(hub, manifest_file, "--connections", "1")
    deadline = time.monotonic() + 60
    while (not partial.exists() or partial.stat().st_size < BIG_SIZE // 2) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    kept = partial.stat().st_size
    assert 0 < kept < BIG_SIZE
    _post(hub, "/_control/faults", {})
    second = _cli_fetch(hub, manifest_file, "--connections", "1")
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    ranges = [e["range"] for e in _gets(hub, BIG[1]) if e["range"]]
    assert ranges and int(ranges[-1].removeprefix("bytes=").rstrip("-")) >= kept
    assert _sha(Path(manifest[0]["dest"])) == _hub_sha(hub, *BIG)


@pytest.mark.parametrize(
    "faults",
    [
        {"reset_after": 1_000_000, "resets": 2},
        {"errors_5xx": 3},
        {"truncate_after": 500_000, "truncations": 2},
    ],
    ids=["resets", "5xx", "truncation"],
)
def test_transient_faults_end_byte_exact(hub, tmp_path, faults):
    _post(hub, "/_control/faults", faults)
    manifest = _manifest(tmp_path, SMALL[:2])
    _fetch(hub, manifest, concurrency=1)
    for entry, file in zip(manifest, SMALL[:2], strict=True):
        assert _sha(Path(entry["dest"])) == _hub_sha(hub, *file)


def test_wrong_bytes_fail_naming_the_file_and_leave_nothing_in_place(hub, tmp_path):
    manifest = _manifest(tmp_path, SMALL[:1])
    _post(hub, "/_control/faults", {"wrong_bytes": True})
    _post(hub, "/_control/log/clear", {})
    with pytest.raises(FetchError) as failure:
        _fetch(hub, manifest, backoff=_tries(6))
    assert manifest[0]["dest"] in str(failure.value)
    assert "sha256 differs twice" in str(failure.value)
    assert not Path(manifest[0]["dest"]).exists()
    # Wrong bytes are no network fault: fetched once more from scratch, then given up.
    assert len([e for e in _log(hub) if e["method"] == "GET"]) == 2


def test_hub_headers_are_read_before_the_cdn_redirect(hub, tmp_path):
    # huggingface.co answers resolve for LFS files with a 302 that carries X-Linked-Etag;
    # the CDN's answer does not. Following the redirect on HEAD would lose the sha256, and
    # these wrong bytes would be accepted.
    expected = _hub_sha(hub, *SMALL[0])
    _post(hub, "/_control/faults", {"cdn_redirect": True, "wrong_bytes": True})
    manifest = _manifest(tmp_path, SMALL[:1])
    with pytest.raises(FetchError, match="sha256"):
        _fetch(hub, manifest, backoff=_tries(2))
    assert not Path(manifest[0]["dest"]).exists()
    _post(hub, "/_control/faults", {"cdn_redirect": True})
    _post(hub, "/_control/log/clear", {})
    _fetch(hub, manifest)
    assert _sha(Path(manifest[0]["dest"])) == expected
    assert [e["path"].split("/")[1] for e in _log(hub) if e["method"] == "GET"] == [
        SMALL[0][0].split("/")[0],
        "_cdn",
    ]


def test_disk_full_is_refused_before_writing(hub, tmp_path):
    with _tmpfs(tmp_path / "small", "1m") as small:
        with pytest.raises(FetchError, match=r"not enough disk space: .* GB needed .* GB free"):
            _fetch(hub, _manifest(small, SMALL))
        assert [p.name for p in small.iterdir()] == []
        assert _gets(hub, SMALL[0][1]) == []


def test_two_fetchers_on_one_shared_dir_download_each_file_once(hub, tmp_path):
    manifest_file = tmp_path / "manifest.json"
    manifest = _manifest(tmp_path / "shared", SMALL)
    manifest_file.write_text(json.dumps(manifest))
    _post(hub, "/_control/faults", {"throttle_bps": 8 * 2**20})
    fetchers = [_cli_fetch(hub, manifest_file) for _ in range(2)]
    for fetcher in fetchers:
        _, err = fetcher.communicate(timeout=120)
        assert fetcher.returncode == 0, err
    for repo, path in SMALL:
        assert len(_gets(hub, path)) == 1
        assert _sha(tmp_path / "shared" / Path(path).name) == _hub_sha(hub, repo, path)


def test_staging_on_another_filesystem_publishes_whole_files(hub, tmp_path):
    with _tmpfs(tmp_path / "stage", "64m") as stage:
        manifest = _manifest(tmp_path / "volume", SMALL)
        _fetch(hub, manifest, staging=stage)
        for entry, file in zip(manifest, SMALL, strict=True):
            assert _sha(Path(entry["dest"])) == _hub_sha(hub, *file)
        assert list(stage.iterdir()) == []
        assert not list((tmp_path / "volume").glob("*.publishing"))


# -- Xet storage -----------------------------------------------------------------------------


def _cas_requests(hub, kind: str) -> list[dict]:
    return [e for e in _log(hub) if e["method"] == "GET" and f"/cas/{kind}" in e["path"]]


def test_xet_files_come_through_hf_xet_byte_exact(hub, tmp_path):
    _post(hub, "/_control/xet", {"enabled": True})
    files = [BIG, SMALL[2]]
    manifest = _manifest(tmp_path, files)
    assert set(_fetch(hub, manifest).values()) == {"fetched"}
    for entry, file in zip(manifest, files, strict=True):
        dest = Path(entry["dest"])
        assert _sha(dest) == _hub_sha(hub, *file)
        assert json.loads(Path(stamp_path(str(dest))).read_text())["sha256"] == _sha(dest)
    assert len(_cas_requests(hub, "v1/reconstructions/")) == 2
    assert all(e["range"] for e in _cas_requests(hub, "xorb/"))
    assert [_gets(hub, path) for _, path in files] == [[], []]  # no plain HTTP body
    _post(hub, "/_control/log/clear", {})
    assert set(_fetch(hub, manifest).values()) == {"present"}
    assert _log(hub) == []


def test_hf_hub_disable_xet_means_plain_http(hub, tmp_path):
    _post(hub, "/_control/xet", {"enabled": True})
    manifest_file = tmp_path / "manifest.json"
    manifest = _manifest(tmp_path / "models", SMALL[:1])
    manifest_file.write_text(json.dumps(manifest))
    fetcher = _cli_fetch(hub, manifest_file, HF_HUB_DISABLE_XET="1")
    _, err = fetcher.communicate(timeout=120)
    assert fetcher.returncode == 0, err
    assert len(_gets(hub, SMALL[0][1])) == 1
    assert _cas_requests(hub, "") == []
    assert _sha(Path(manifest[0]["dest"])) == _hub_sha(hub, *SMALL[0])


def test_xet_wrong_bytes_fail_naming_the_file_and_leave_nothing_in_place(hub, tmp_path):
    _post(hub, "/_control/xet", {"enabled": True})
    _post(hub, "/_control/faults", {"wrong_bytes": True})
    manifest = _manifest(tmp_path, SMALL[:1])
    with pytest.raises(FetchError) as failure:
        _fetch(hub, manifest, backoff=_tries(2))
    assert manifest[0]["dest"] in str(failure.value)
    assert "sha256" in str(failure.value)
    assert not Path(manifest[0]["dest"]).exists()
    assert len(_cas_requests(hub, "v1/reconstructions/")) == 2  # tried twice through Xet


def test_xet_under_5xx_ends_byte_exact(hub, tmp_path):
    _post(hub, "/_control/xet", {"enabled": True})
    _post(hub, "/_control/faults", {"errors_5xx": 3})
    manifest = _manifest(tmp_path, SMALL[:2])
    _fetch(hub, manifest, concurrency=1)
    for entry, file in zip(manifest, SMALL[:2], strict=True):
        assert _sha(Path(entry["dest"])) == _hub_sha(hub, *file)


@pytest.fixture(scope="module")
def gated_xet_hub(tmp_path_factory):
    base = tmp_path_factory.mktemp("gated-hub")
    (base / "logs").mkdir()
    info = control.start_hub(
        base, base / "logs", 2**20, {}, "hf_sandbox_token", [SMALL[0][0]], offer_xet=True
    )
    yield info | {"dir": base / "hub"}
    control.stop_process(info["pid"])


def test_gated_xet_file_needs_the_token_and_gets_it(gated_xet_hub, tmp_path):
    manifest = _manifest(tmp_path, SMALL[:1])
    with pytest.raises(FetchError, match=r"HTTP 401 from the hub \(gated repo: set HF_TOKEN\)"):
        _fetch(gated_xet_hub, manifest)
    assert not Path(manifest[0]["dest"]).exists()
    _fetch(gated_xet_hub, manifest, Sources(gated_xet_hub["url"], "hf_sandbox_token"))
    served = gated_xet_hub["dir"] / SMALL[0][0] / SMALL[0][1]
    assert _sha(Path(manifest[0]["dest"])) == _sha(served)
    log = _log(gated_xet_hub)
    assert [e["path"] for e in log if "xet-read-token" in e["path"]] == [
        f"/api/models/{SMALL[0][0]}/xet-read-token/main"
    ]
    assert _cas_requests(gated_xet_hub, "xorb/")


# -- CivitAI ---------------------------------------------------------------------------------


def _served(hub, key: str) -> Path:
    return hub["dir"] / "_extras" / key


def _civitai(hub, version: int, dest: Path, **fields):
    return [{"civitai": version, "dest": str(dest), **fields}]


def test_a_civitai_file_is_verified_against_the_apis_sha256(hub, tmp_path):
    dest = tmp_path / "loras" / "style.safetensors"
    token = hub["civitai_token"]
    sources = Sources(hub["url"], civitai_endpoint=hub["url"], civitai_token=token)
    assert _fetch(hub, _civitai(hub, 1001, dest), sources) == {str(dest): "fetched"}
    name = CIVITAI_VERSIONS[1001][0][0]
    assert _sha(dest) == _sha(_served(hub, civitai_key(1001, name)))
    stamp = json.loads(Path(stamp_path(str(dest))).read_text())
    assert stamp["sha256"] == _sha(dest) and stamp["source"] == "civitai:1001:"
    # The token went to CivitAI's API alone: the redirect target saw neither it nor a header.
    cdn = [e for e in _log(hub) if e["path"].startswith("/_presigned/")]
    assert cdn and not any(e["authorization"] or token in e["path"] for e in cdn)
    _post(hub, "/_control/log/clear", {})
    assert _fetch(hub, _civitai(hub, 1001, dest), sources) == {str(dest): "present"}
    assert _log(hub) == []


def test_civitai_wrong_bytes_leave_nothing_at_the_final_path(hub, tmp_path):
    dest = tmp_path / "ckpt.safetensors"
    _post(hub, "/_control/faults", {"wrong_bytes": True})
    with pytest.raises(FetchError, match="sha256 differs twice") as failure:
        _fetch(hub, _civitai(hub, 1002, dest), backoff=_tries(2))
    # The expected sha256 is the API's (upper case there), lower-cased.
    served = _sha(_served(hub, civitai_key(1002, CIVITAI_VERSIONS[1002][0][0])))
    assert served in str(failure.value)
    assert not dest.exists()


def test_a_civitai_version_of_several_files_gives_the_named_one(hub, tmp_path):
    name = CIVITAI_VERSIONS[1002][1][0]
    dest = tmp_path / "training.zip"
    _fetch(hub, _civitai(hub, 1002, dest, file=name))
    assert _sha(dest) == _sha(_served(hub, civitai_key(1002, name)))
    with pytest.raises(FetchError, match=r"no file of that name \(it has .*\.safetensors"):
        _fetch(hub, _civitai(hub, 1002, tmp_path / "x", file="nope.bin"))


def test_civitai_without_a_token_fails_naming_it_and_an_unknown_version_by_its_id(hub, tmp_path):
    dest = tmp_path / "models" / "style.safetensors"
    for version, says in [
        (1001, "CivitAI refused CivitAI model version 1001 (HTTP 401): set CIVITAI_TOKEN"),
        (999, "CivitAI has no model version 999 (HTTP 404): check the id"),
    ]:
        manifest_file = tmp_path / f"manifest-{version}.json"
        manifest_file.write_text(json.dumps(_civitai(hub, version, dest)))
        fetcher = _cli_fetch(hub, manifest_file)
        out, err = fetcher.communicate(timeout=60)
        assert fetcher.returncode == 1
        assert f"podforge fetch: FAILED {dest}: {says}" in err.splitlines()[-1]
        assert not dest.exists()


def test_the_civitai_token_is_in_no_output_and_no_command_line(hub, tmp_path):
    token = hub["civitai_token"]
    token_file = tmp_path / "civitai_token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    manifest_file = tmp_path / "manifest.json"
    manifest_file.write_text(json.dumps(_civitai(hub, 1001, tmp_path / "m" / "style.bin")))
    _post(hub, "/_control/faults", {"throttle_bps": 2**20})  # ~3 s: long enough to look at
    fetcher = _cli_fetch(hub, manifest_file, CIVITAI_TOKEN_FILE=str(token_file))
    time.sleep(1)
    command_line = Path(f"/proc/{fetcher.pid}/cmdline").read_bytes().decode()
    out, err = fetcher.communicate(timeout=60)
    assert fetcher.returncode == 0, err
    assert "fetched" in out
    assert token not in command_line + out + err


# -- plain URLs ------------------------------------------------------------------------------


def _url(hub, name: str, dest: Path, **fields):
    return [{"url": f"{hub['url']}/files/{name}", "dest": str(dest), **fields}]


def test_a_url_with_a_sha256_is_checked_and_one_without_is_stamped_with_its_own(hub, tmp_path):
    name = "sandbox_upscaler.pth"
    served = _sha(_served(hub, plain_key(name)))
    checked, unchecked = tmp_path / "checked.pth", tmp_path / "unchecked.pth"
    _fetch(hub, _url(hub, name, checked, sha256=served.upper()))
    _fetch(hub, _url(hub, name, unchecked))
    for dest in (checked, unchecked):
        assert json.loads(Path(stamp_path(str(dest))).read_text())["sha256"] == served
    with pytest.raises(FetchError, match=r"\), expected " + "0" * 64):
        _fetch(hub, _url(hub, name, tmp_path / "wrong.pth", sha256="0" * 64), backoff=_tries(2))
    assert not (tmp_path / "wrong.pth").exists()
    with pytest.raises(FetchError, match=r"HTTP 404 from http://127\.0\.0\.1:\d+/files/gone"):
        _fetch(hub, _url(hub, "gone", tmp_path / "gone"))


# -- several connections per file -------------------------------------------------------------


def _ranges_served(hub, name: str) -> list[tuple[int, int]]:
    """(first, last) byte of every ranged GET of ``name``, but the 1-byte probe."""
    found = []
    for entry in _gets(hub, name):
        first, _, last = (entry["range"] or "").removeprefix("bytes=").partition("-")
        if first and last and (int(first), int(last)) != (0, 0):
            found.append((int(first), int(last)))
    return found


def _covered(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The bytes ``intervals`` cover, as sorted disjoint (first, last) intervals."""
    merged: list[tuple[int, int]] = []
    for first, last in sorted(intervals):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def test_a_large_file_comes_over_several_connections_byte_exact(hub, tmp_path):
    dest = tmp_path / RANGED
    _fetch(hub, _url(hub, RANGED, dest), connections=16)
    assert _sha(dest) == _sha(_served(hub, plain_key(RANGED)))
    starts = {first for first, _ in _ranges_served(hub, RANGED)}
    # A piece per 20 MiB, in order; an idle connection may take half of a piece in progress.
    assert set(range(0, RANGED_SIZE, PIECE)) <= starts
    assert not list(tmp_path.glob("*.partial*"))


def test_a_killed_ranged_fetch_resumes_moving_only_the_missing_bytes(hub, tmp_path):
    manifest_file = tmp_path / "manifest.json"
    dest = tmp_path / "models" / RANGED
    manifest_file.write_text(json.dumps(_url(hub, RANGED, dest)))
    record = dest.with_name(RANGED + ".partial.ranges")
    # 8 connections at 4 MiB/s each: the 160 MiB take ~5 s; killed after about half.
    _post(hub, "/_control/faults", {"throttle_bps": 4 * 2**20})
    first = _cli_fetch(hub, manifest_file)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        kept = json.loads(record.read_text()) if record.exists() else None
        if kept and sum(e - n for _, n, e in kept["ranges"]) < RANGED_SIZE // 2:
            break
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    gaps = [(next_, end - 1) for _, next_, end in json.loads(record.read_text())["ranges"]]
    assert 0 < sum(last - first + 1 for first, last in gaps) < RANGED_SIZE * 0.6
    _post(hub, "/_control/faults", {})
    _post(hub, "/_control/log/clear", {})
    second = _cli_fetch(hub, manifest_file)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    asked = _ranges_served(hub, RANGED)
    # Only missing bytes were asked for, and all of them.
    assert all(any(a <= first and last <= b for a, b in gaps) for first, last in asked)
    assert _covered(asked) == _covered(gaps)
    assert _sha(dest) == _sha(_served(hub, plain_key(RANGED)))
    assert not record.exists()


def test_a_connection_reset_mid_range_is_retried_from_where_it_stopped(hub, tmp_path):
    dest = tmp_path / RANGED
    cut = 5 * 2**20
    _post(hub, "/_control/faults", {"reset_after": cut, "resets": 1, "throttle_bps": 50 * 2**20})
    _fetch(hub, _url(hub, RANGED, dest))
    assert _sha(dest) == _sha(_served(hub, plain_key(RANGED)))
    starts = {first for first, _ in _ranges_served(hub, RANGED)}
    # The piece the reset cut is asked for again from where its bytes stopped.
    assert any(piece + cut in starts for piece in range(0, RANGED_SIZE, PIECE))
