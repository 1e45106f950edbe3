"""A TCP relay that drops a connection once it has been idle for a while, as NATs and cloud
load balancers do: what SSH keepalives are for.

    python -m sandbox.idle_cut --listen 127.0.0.1:PORT --to 127.0.0.40:2222 --idle 2
"""

from __future__ import annotations

import argparse
import selectors
import socket
import time


def relay(listen: tuple[str, int], target: tuple[str, int], idle: float) -> None:
    selector = selectors.DefaultSelector()
    server = socket.create_server(listen)
    selector.register(server, selectors.EVENT_READ)
    peers: dict[socket.socket, socket.socket] = {}
    last: dict[socket.socket, float] = {}  # per connection pair, keyed by the client side

    def drop(client: socket.socket) -> None:
        for end in (client, peers.pop(client)):
            peers.pop(end, None)
            selector.unregister(end)
            end.close()
        last.pop(client, None)

    while True:
        for key, _ in selector.select(timeout=0.2):
            if key.fileobj is server:
                client, _ = server.accept()
                upstream = socket.create_connection(target)
                peers[client], peers[upstream] = upstream, client
                last[client] = time.monotonic()
                selector.register(client, selectors.EVENT_READ)
                selector.register(upstream, selectors.EVENT_READ)
                continue
            end = key.fileobj
            assert isinstance(end, socket.socket)
            if end not in peers:
                continue
            other = peers[end]
            client = end if end in last else other
            data = end.recv(65536)
            if not data:
                drop(client)
                continue
            other.sendall(data)
            last[client] = time.monotonic()
        now = time.monotonic()
        for client in [c for c, seen in last.items() if now - seen > idle]:
            drop(client)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox.idle_cut")
    parser.add_argument("--listen", required=True)
    parser.add_argument("--to", required=True)
    parser.add_argument("--idle", type=float, required=True)
    args = parser.parse_args()
    listen_host, listen_port = args.listen.rsplit(":", 1)
    to_host, to_port = args.to.rsplit(":", 1)
    relay((listen_host, int(listen_port)), (to_host, int(to_port)), args.idle)


if __name__ == "__main__":
    main()
