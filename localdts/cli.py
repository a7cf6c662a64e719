"""``sbworker dts``: run the durable DTS backend in the foreground until SIGINT/SIGTERM (exit code 0)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import NoReturn

from .limits import MAX_WORK_ITEM_BYTES
from .sdkcheck import SdkChanged
from .server import ExposureError, LocalDts, check_exposure, is_loopback
from .store import DataFileError

DEFAULT_DATA_DIR = Path(".localdata")
PROG = "sbworker dts"
# SIGINT/SIGTERM only append to a list, which the main thread looks at this often. A handler runs in the main
# thread between two bytecodes, and one that set a threading.Event waited for without a timeout made localdts
# ignore SIGTERM now and then under load: run inside that thread's own Event.wait, after it took the Event's lock,
# the handler's set() waited for the lock for ever; and a signal that came just before the wait went to sleep was
# handled only when the thread woke, which was never.
SIGNAL_POLL_SECONDS = 0.2


class _Parser(argparse.ArgumentParser):
    """Bad arguments: one line and exit code 2 (argparse would print the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range (0-65535): {port}")
    return port


def _work_item_bytes(text: str) -> int:
    try:
        size = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of bytes: {text!r}") from None
    if size < 64 * 1024:
        raise argparse.ArgumentTypeError(f"too small to hold a work item (at least 65536): {size}")
    return size


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Run a local Durable Task Scheduler backend that keeps orchestrations across restarts.",
        epilog="Example: sbworker dts --port 8080 --data .localdata  (then DTS_CONNECTION_STRING as printed)",
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: %(default)s; another address needs --allow-remote)")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow --host to be a non-loopback address (there is no authentication and no TLS)")
    parser.add_argument("--port", type=_port, default=8080, help="TCP port, 0 for any free port (default: %(default)s)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--data", type=Path, default=None, metavar="DIR",
                       help=f"directory (or .sqlite3 file) to keep orchestrations in (default: {DEFAULT_DATA_DIR}/)")
    where.add_argument("--memory", action="store_true", help="keep nothing on disk: everything is lost on exit")
    parser.add_argument("--max-work-item-bytes", type=_work_item_bytes, default=MAX_WORK_ITEM_BYTES, metavar="BYTES",
                        help="an orchestration whose next work item would be larger ends FAILED instead of being "
                             "offered to workers that cannot receive it (default: %(default)s, gRPC's default "
                             "maximum message size; raise it only with workers that accept larger messages)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv for debug)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code: 0 after SIGINT/SIGTERM, 1 if the port is taken, 2 for bad input."""
    args = build_parser().parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        check_exposure(args.host, args.allow_remote)
    except ExposureError as exc:
        print(f"{PROG}: error: {str(exc).replace(' (LocalDts(allow_remote=True))', '')}", file=sys.stderr)
        return 2
    if not is_loopback(args.host):
        print(f"{PROG}: warning: listening on {args.host}: other machines can start, read, terminate and purge "
              "every orchestration (no authentication, no TLS)", file=sys.stderr)
    data = None if args.memory else (args.data if args.data is not None else DEFAULT_DATA_DIR)
    dts = LocalDts(host=args.host, port=args.port, data_path=data, allow_remote=args.allow_remote,
                   max_work_item_bytes=args.max_work_item_bytes)
    try:
        dts.start()
    except (DataFileError, SdkChanged) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{PROG}: error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1

    received: list[int] = []
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda number, _frame: received.append(number))
    where = f"orchestrations kept in {dts.data_file}" if dts.data_file else "memory only"
    print(f"localdts listening on {args.host}:{dts.port} ({where}); "
          f"DTS_CONNECTION_STRING is on the next line", file=sys.stderr)
    print(dts.connection_string, flush=True)
    try:
        while not received:
            time.sleep(SIGNAL_POLL_SECONDS)
    except KeyboardInterrupt:
        pass
    finally:
        dts.stop()
    return 0
