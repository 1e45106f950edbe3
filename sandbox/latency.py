"""A TCP relay that adds network latency: what a laptop's SSH to a pod in a datacenter has.

    python -m sandbox.latency --one-way-ms 30 127.0.0.2:2223=127.0.0.2:2222 [...]

Sandbox pods answer over loopback in microseconds, so a benchmark of many pods measures only
this machine's cores. Through this relay every byte reaches the other side ``one_way_ms``
later in both directions (a round trip of twice that), in order and at full rate: latency
without a bandwidth cap. Runs until killed; prints "ready" once every listener is bound.
"""

from __future__ import annotations

import argparse
import asyncio
import time

CHUNK = 65536


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy reader to writer, each chunk ``delay`` s after it arrived (None: end of data)."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def receive() -> None:
        while data := await reader.read(CHUNK):
            queue.put_nowait((time.monotonic() + delay, data))
        queue.put_nowait((time.monotonic() + delay, b""))

    receiving = asyncio.create_task(receive())
    try:
        while True:
            due, data = await queue.get()
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                break
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        receiving.cancel()
    await asyncio.gather(receiving, return_exceptions=True)


async def _relay(
    target: tuple[str, int],
    delay: float,
    client_r: asyncio.StreamReader,
    client_w: asyncio.StreamWriter,
) -> None:
    try:
        server_r, server_w = await asyncio.open_connection(*target)
    except OSError as error:
        print(f"{target[0]}:{target[1]}: {error}", flush=True)
        client_w.close()
        return
    await asyncio.gather(
        _pipe(client_r, server_w, delay), _pipe(server_r, client_w, delay), return_exceptions=True
    )
    for writer in (client_w, server_w):
        writer.close()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def serve(routes: list[tuple[tuple[str, int], tuple[str, int]]], delay: float) -> None:
    servers = [
        await asyncio.start_server(lambda r, w, target=target: _relay(target, delay, r, w), *listen)
        for listen, target in routes
    ]
    print("ready", flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox.latency")
    parser.add_argument("--one-way-ms", type=float, required=True)
    parser.add_argument("routes", nargs="+", metavar="LISTEN=TARGET", help="host:port=host:port")
    args = parser.parse_args()
    routes = []
    for route in args.routes:
        listen, sep, target = route.partition("=")
        if not sep:
            parser.error(f"{route!r}: expected LISTEN=TARGET, e.g. 127.0.0.2:2223=127.0.0.2:2222")
        routes.append((_address(listen), _address(target)))
    asyncio.run(serve(routes, args.one_way_ms / 1000))


if __name__ == "__main__":
    main()
