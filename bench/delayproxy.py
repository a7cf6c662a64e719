"""A loopback TCP proxy that delays every chunk by a fixed time in each direction: cloud-like latency for the bench.

`python -m bench.delayproxy --delay 0.002 PORT [PORT ...]` listens on one free 127.0.0.1 port per upstream port,
prints `{"ports": {"<upstream>": <listening>, ...}}` as one JSON line, and forwards until stdin closes. Each
chunk leaves `delay` seconds after it arrived, in order (a later chunk never overtakes an earlier one), so a round
trip through it costs 2 x delay more than over plain loopback, whatever the load. It runs in its own process, so
its CPU is neither the listener's nor the load generator's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys

CHUNK = 65536
DEFAULT_DELAY = 0.002  # seconds added each way: `make bench` row 9, its sweep, bench.concurrency


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Read as fast as bytes come; a second task writes each chunk once its time has come."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(deliver())
    try:
        while data := await reader.read(CHUNK):
            queue.put_nowait((loop.time() + delay, data))
        queue.put_nowait((0.0, b""))
        await sender
    except (ConnectionError, OSError):
        pass
    finally:
        sender.cancel()
        with contextlib.suppress(Exception):
            writer.close()


async def _serve(upstream_ports: list[int], delay: float) -> None:
    servers = []
    ports: dict[str, int] = {}
    for upstream in upstream_ports:
        async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, upstream: int = upstream
                         ) -> None:
            try:
                up_r, up_w = await asyncio.open_connection("127.0.0.1", upstream)
            except OSError:
                client_w.close()
                return
            for w in (client_w, up_w):
                w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await asyncio.gather(_pump(client_r, up_w, delay), _pump(up_r, client_w, delay))

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        ports[str(upstream)] = server.sockets[0].getsockname()[1]
    print(json.dumps({"ports": ports}), flush=True)
    # Serve until the parent closes our stdin (it ends with the bench, whatever happens to it).
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for server in servers:
        server.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.delayproxy", description=__doc__)
    parser.add_argument("--delay", type=float, default=DEFAULT_DELAY,
                        help=f"seconds added each way (default {DEFAULT_DELAY})")
    parser.add_argument("ports", type=int, nargs="+", help="upstream 127.0.0.1 ports")
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.ports, args.delay))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
