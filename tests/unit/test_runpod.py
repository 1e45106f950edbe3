"""fleet/runpod.py: which pods of a v2 listPods answer are deployed, and the API's errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from runpod_pods import v2_pod

from conftest import free_port, start_listening
from fleet.runpod import RunPodApiError, deployable_pods, host_names, list_pods

REPO = Path(__file__).resolve().parents[2]
KEY = "rpa_SECRETKEY0123456789"


def test_only_running_pods_with_full_ssh_are_deployed_and_every_other_is_said_why():
    body = {
        "pods": [
            v2_pod("p1", "wan-a", direct=("198.51.100.4", 40022), count=2),
            v2_pod("p2", "wan-proxy", direct=None),
            v2_pod("p3", "wan-booting", direct=None, ports=False),
            v2_pod("p4", "wan-queued", status="STARTING", direct=None, ports=False),
            v2_pod("p5", "wan-stopped", status="EXITED", direct=None, ports=False),
        ]
    }
    pods, skipped = deployable_pods(body)
    assert [(p.name, p.address, p.port, p.gpu_count) for p in pods] == [
        ("wan-a", "198.51.100.4", 40022, 2)
    ]
    assert pods[0].host_data()["runpod_gpu_type"] == "NVIDIA GeForce RTX 4090"
    assert len(skipped) == 4
    proxy, booting, queued, stopped = skipped
    assert "wan-proxy (p2)" in proxy and "SSH proxy" in proxy and "port 22" in proxy
    assert "wan-booting (p3)" in booting and "no public port mapped yet" in booting
    assert "wan-queued (p4)" in queued and "starting" in queued
    assert "wan-stopped (p5)" in stopped and "EXITED" in stopped


def test_the_name_filter_is_a_glob_and_filtered_out_pods_are_not_reported():
    body = {"pods": [v2_pod("p1", "wan-a"), v2_pod("p2", "sdxl-b"), v2_pod("p3", "x", "EXITED")]}
    pods, skipped = deployable_pods(body, "wan-*")
    assert [p.name for p in pods] == ["wan-a"] and skipped == []


def test_host_names_are_pod_names_made_unique_with_the_id_only_where_they_repeat():
    pods, _ = deployable_pods(
        {"pods": [v2_pod("p1", "wan"), v2_pod("p2", "wan"), v2_pod("p3", "sdxl")]}
    )
    assert host_names(pods) == ["wan-p1", "wan-p2", "sdxl"]


def test_a_body_without_a_pods_list_is_refused_in_words():
    with pytest.raises(RunPodApiError, match='without a "pods" list'):
        deployable_pods({"data": {"myself": {"pods": []}}})  # a GraphQL-shaped answer


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The v2 stand-in (sandbox/runpod_api.py) as a process; (base URL, its answers file)."""
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps({"pods": [v2_pod("p1", "wan-a")]}))
    port = free_port()
    process = start_listening(
        [
            sys.executable,
            "-m",
            "sandbox.runpod_api",
            "--port",
            str(port),
            "--answers",
            str(answers),
        ],
        port,
        env={**os.environ, "RUNPOD_API_KEY": KEY},
    )
    try:
        yield f"http://127.0.0.1:{port}", answers
    finally:
        process.kill()
        process.wait()


def test_list_pods_reads_the_v2_answer(api):
    url, _ = api
    assert [p["name"] for p in list_pods(url, KEY)["pods"]] == ["wan-a"]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            {"status": 403, "problem": {"title": "Forbidden", "detail": "key has no pod access"}},
            "answered 403 (Forbidden: key has no pod access): the key lacks access to pods",
        ),
        (
            {"status": 429, "retry_after": 7, "times": 99, "then": {"pods": []}},
            "answered 429 (Too Many Requests): rate limited: retry after 7 s",
        ),
        (
            {"raw": "<html><body>Bad gateway</body></html>"},
            "a body that is not JSON (starts b'<html><body>Bad gateway",
        ),
        (
            {"status": 500, "problem": {"title": "Internal Server Error"}},
            "answered 500 (Internal Server Error): RunPod's side failed",
        ),
    ],
)
def test_api_errors_are_one_line_without_the_key(api, answer, expected, monkeypatch):
    url, answers = api
    answers.write_text(json.dumps(answer))
    monkeypatch.setattr("fleet.runpod.RATE_LIMIT_MAX_WAIT_S", 5.0)  # 7 s: too long to wait
    with pytest.raises(RunPodApiError) as raised:
        list_pods(url, KEY)
    message = str(raised.value)
    assert expected in message and "\n" not in message and KEY not in message


def test_a_wrong_key_gets_401_and_is_told_to_check_the_key(api):
    url, _ = api
    with pytest.raises(
        RunPodApiError, match=r"401 \(Unauthorized: invalid bearer token\): check RUNPOD_API_KEY"
    ):
        list_pods(url, "rpa_wrong")


def test_a_429_with_a_short_retry_after_is_waited_out(api, capsys):
    url, answers = api
    answers.write_text(
        json.dumps(
            {"status": 429, "retry_after": 1, "times": 2, "then": {"pods": [v2_pod("p9", "late")]}}
        )
    )
    began = time.monotonic()
    assert [p["name"] for p in list_pods(url, KEY)["pods"]] == ["late"]
    assert time.monotonic() - began >= 2  # two Retry-After waits of 1 s
    assert capsys.readouterr().err.count("RunPod API rate limit: asking again in 1 s") == 2


def test_an_api_that_does_not_answer_times_out_in_words(api):
    url, answers = api
    answers.write_text(json.dumps({"delay": 5}))
    with pytest.raises(RunPodApiError, match=r"did not answer within 0.5 s"):
        list_pods(url, KEY, timeout=0.5)


def _inventory(url: str, key: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`pyinfra inventories/runpod.py debug-inventory` as a user runs it."""
    return subprocess.run(
        [str(REPO / ".venv/bin/pyinfra"), "inventories/runpod.py", "debug-inventory"],
        cwd=REPO,
        env={**os.environ, "RUNPOD_API_KEY": key, "RUNPOD_API_URL": url, **env},
        capture_output=True,
        text=True,
    )


def test_the_inventory_lists_deployable_pods_and_says_why_it_skips_the_others(api):
    url, answers = api
    answers.write_text(
        json.dumps(
            {
                "pods": [
                    v2_pod("p1", "wan-a", direct=("198.51.100.4", 40022)),
                    v2_pod("p2", "wan-proxy", direct=None),
                    v2_pod("p3", "sdxl", status="EXITED", direct=None, ports=False),
                ]
            }
        )
    )
    done = _inventory(url, KEY, RUNPOD_POD_FILTER="wan-*")
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert "[wan-a]" in output and '"ssh_hostname": "198.51.100.4"' in output
    assert '"ssh_port": 40022' in output and '"runpod_id": "p1"' in output
    assert "skipped wan-proxy (p2): only RunPod's SSH proxy" in output
    assert "sdxl" not in output  # filtered out by name, so not even skipped
    assert KEY not in output


def test_an_api_error_ends_the_inventory_in_one_line_without_a_traceback(api):
    url, _ = api
    done = _inventory(url, "rpa_wrong_key")
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "Traceback" not in output and "rpa_wrong_key" not in output
    errors = [line for line in output.splitlines() if "RunPod API" in line]
    assert len(errors) == 1 and "401" in errors[0] and "check RUNPOD_API_KEY" in errors[0]
