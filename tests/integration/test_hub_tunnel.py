"""The sandbox hub's tunnel (``CONNECT``, a pod's ``HTTPS_PROXY``): bench.serve's pods fetch
their stack from PyPI through it, on the link their model downloads share. Here a local
server stands in for PyPI's end (the tests reach nothing outside 127.0.0.0/8)."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from sandbox.hub import Hub, HubServer

BODY = bytes(range(256)) * 4096  # 1 MiB


class _Remote(socketserver.BaseRequestHandler):
    """PyPI's end: reads one line, answers it back, then the body, then closes."""

    def handle(self) -> None:
        line = self.request.makefile("rb").readline()
        self.request.sendall(line + BODY)


@pytest.fixture
def hub() -> Iterator[tuple[Hub, int, int]]:
    """(the hub, its port, the remote's port), each served by a thread, shut down after."""
    remote = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Remote)
    hub = Hub({})
    hub.tunnel_to = frozenset({("127.0.0.1", remote.server_address[1])})
    server = HubServer(("127.0.0.1", 0), hub)
    threads = [
        threading.Thread(target=s.serve_forever, args=(0.05,), daemon=True)
        for s in (remote, server)
    ]
    for thread in threads:
        thread.start()
    try:
        yield hub, server.server_address[1], remote.server_address[1]
    finally:
        for s in (server, remote):
            s.shutdown()
            s.server_close()


def connect(port: int, target: str) -> tuple[socket.socket, bytes]:
    """A proxy client's CONNECT; the socket and the hub's answer head."""
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    client.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += client.recv(1)
    return client, head


def test_a_tunnel_carries_both_ways_and_counts_the_bytes_down(hub):
    server, port, remote = hub
    server.faults.link_bps = 50 * 1024 * 1024  # on the link, as in bench.serve
    client, head = connect(port, f"127.0.0.1:{remote}")
    assert head.startswith(b"HTTP/1.1 200")
    client.sendall(b"GET /simple/torch/\n")
    received = b""
    while piece := client.recv(65536):
        received += piece
    client.close()
    assert received == b"GET /simple/torch/\n" + BODY
    assert server.tunneled == len(received)


@pytest.mark.parametrize("target", ["github.com:443", "127.0.0.1:22", "pypi.org:80", "x:y"])
def test_a_tunnel_anywhere_else_is_refused_naming_where_it_may_go(hub, target):
    server, port, remote = hub
    client, head = connect(port, target)
    client.close()
    assert head.startswith(b"HTTP/1.1 403")
    assert f"tunnels only to 127.0.0.1:{remote}, not {target}".encode() in head
    assert server.tunneled == 0
