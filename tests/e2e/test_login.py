"""ComfyUI behind a login on sandbox pods, with Debian's real nginx: 401 without the
credentials or with wrong ones, 200 with the password and with the API token, the
WebSocket through the proxy, ComfyUI itself only on its private port; a changed password
restarts nginx alone; the password is on no command line and in no readable file or log."""

from __future__ import annotations

import base64
import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from e2e.conftest import files_holding, pod_shell, running_programs
from sandbox.converge import converge, converge_pods

pytestmark = pytest.mark.e2e

CREDENTIALS = "/workspace/.podforge/auth/credentials.json"


@pytest.fixture(scope="module")
def pod(sandbox):
    assert all(not r.failed for r in converge().values())
    return sandbox["pods"][1]


def login(sandbox, pod) -> dict[str, str]:
    return json.loads(pod_shell(sandbox, pod, f"cat {CREDENTIALS}"))


def status(pod, authorization: str | None = None, port: int = 8188) -> int:
    request = urllib.request.Request(f"http://{pod['address']}:{port}/system_stats")
    if authorization:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_only_the_login_lets_a_request_through(sandbox, pod):
    found = login(sandbox, pod)
    assert found["user"] == "comfy" and len(found["password"]) >= 20
    assert status(pod) == 401
    assert status(pod, basic("comfy", "not-the-password")) == 401
    assert status(pod, "Bearer not-the-token") == 401
    assert status(pod, basic(found["user"], found["password"])) == 200
    assert status(pod, f"Bearer {found['token']}") == 200


def test_the_websocket_is_proxied_with_the_login(sandbox, pod):
    found = login(sandbox, pod)
    handshake = (
        "GET /ws?clientId=podforge-test HTTP/1.1\r\n"
        f"Host: {pod['address']}:8188\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: {basic(found['user'], found['password'])}\r\n\r\n"
    )
    with socket.create_connection((pod["address"], 8188), timeout=10) as connection:
        connection.sendall(handshake.encode())
        answer = connection.recv(4096).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 101"), answer
    assert "upgrade: websocket" in answer.lower()


def test_comfyui_itself_listens_only_where_the_proxy_reaches_it(sandbox, pod):
    # The public port is nginx's (it asks for the login); ComfyUI answers on its private
    # port of the pod's own address (sandbox pods share one network namespace).
    assert status(pod) == 401
    assert status(pod, port=18188) == 200
    listening = pod_shell(sandbox, pod, "cat /proc/net/tcp")
    wildcard = [
        line for line in listening.splitlines()[1:] if line.split()[1] == f"00000000:{18188:04X}"
    ]
    assert wildcard == []  # nothing on 0.0.0.0:18188


def test_a_changed_password_restarts_nginx_alone(sandbox, pod):
    before = running_programs(sandbox, pod)
    password = "a-new-password-for-the-e2e-test"
    data = {"comfyui_password": password}
    result = converge_pods({pod["name"]: data}, workdir=Path(sandbox["base"]))[pod["address"]]
    assert not result.failed, result.errors
    after = running_programs(sandbox, pod)
    deadline = time.monotonic() + 30
    while "nginx" not in after and time.monotonic() < deadline:  # STARTING for startsecs
        time.sleep(0.5)
        after = running_programs(sandbox, pod)
    assert after["nginx"] != before["nginx"]
    assert {k: v for k, v in after.items() if k != "nginx"} == {
        k: v for k, v in before.items() if k != "nginx"
    }
    assert status(pod, basic("comfy", password)) == 200
    again = converge_pods({pod["name"]: data}, workdir=Path(sandbox["base"]))[pod["address"]]
    assert not again.failed and again.changed == []
    # The password is on no command line, in no log and in no file others may read.
    assert password not in pod_shell(sandbox, pod, "ps -eo args")
    holding = files_holding(sandbox, pod, password)
    assert holding and all(line.startswith("600 ") for line in holding), holding
    modes = pod_shell(sandbox, pod, "stat -c '%a %U:%G %n' /workspace/.podforge/auth/*")
    assert "640 root:www-data /workspace/.podforge/auth/htpasswd" in modes
