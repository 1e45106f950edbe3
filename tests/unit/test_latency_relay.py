"""sandbox.latency (the benchmarks' network-like SSH path): bytes arrive intact and in
order, each direction later by the set delay, and an end of data passes through."""

from __future__ import annotations

import socket
import sys
import time

from conftest import free_port, start_listening

ECHO = """
import socket, sys
server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
while True:
    connection, _ = server.accept()
    with connection:
        while data := connection.recv(65536):
            connection.sendall(data)
"""


def _receive(connection: socket.socket, size: int) -> bytes:
    received = b""
    while len(received) < size:
        chunk = connection.recv(65536)
        assert chunk, f"connection ended after {len(received)} of {size} bytes"
        received += chunk
    return received


def test_relay_delays_each_way_and_keeps_every_byte():
    echo_port, relay_port = free_port(), free_port()
    echo = start_listening([sys.executable, "-c", ECHO, str(echo_port)], echo_port)
    relay = start_listening(
        [
            sys.executable,
            "-m",
            "sandbox.latency",
            "--one-way-ms",
            "40",
            f"127.0.0.1:{relay_port}=127.0.0.1:{echo_port}",
        ],
        relay_port,
    )
    try:
        with socket.create_connection(("127.0.0.1", relay_port)) as connection:
            began = time.monotonic()
            connection.sendall(b"ping")
            assert _receive(connection, 4) == b"ping"
            assert time.monotonic() - began >= 0.08  # 40 ms there, 40 ms back
            payload = bytes(range(256)) * 8192  # 2 MiB, many chunks: order must hold
            connection.sendall(payload)
            assert _receive(connection, len(payload)) == payload
            connection.shutdown(socket.SHUT_WR)  # our end of data reaches the echo server,
            assert connection.recv(1) == b""  # which closes; its end comes back to us
    finally:
        for process in (relay, echo):
            process.kill()
            process.wait()
