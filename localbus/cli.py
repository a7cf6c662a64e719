"""``sbworker localbus``: run the broker in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path

from .config import DEFAULT_CONFIG_PATH, ConfigError
from .server import DEFAULT_KEY_NAME, DEFAULT_SAS_KEY, ExposureError, LocalBus, check_exposure, is_loopback
from .store import MIN_FREE_BYTES, StorageError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sbworker localbus",
        description="Run a local Service Bus-compatible AMQP broker (queues from the emulator's Config.json).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=5672, help="TCP port, 0 for any free port (default: %(default)s)")
    parser.add_argument("--config", type=Path, default=None, metavar="PATH",
                        help=f"emulator Config.json with the queues (default: {_display(DEFAULT_CONFIG_PATH)})")
    parser.add_argument("--data", type=Path, default=None, metavar="PATH",
                        help="directory (or .sqlite3 file) to keep messages in; memory only when omitted")
    parser.add_argument("--key", default=DEFAULT_SAS_KEY, metavar="KEY",
                        help="shared access key that SAS tokens must be signed with (default: the emulator's "
                             "well-known %(default)s)")
    parser.add_argument("--key-name", default=DEFAULT_KEY_NAME, metavar="NAME",
                        help="shared access key name (default: %(default)s)")
    parser.add_argument("--min-free-mb", type=float, default=MIN_FREE_BYTES / 2**20, metavar="MB",
                        help="with --data, refuse sends while the disk has less free space than this "
                             "(default: %(default)g)")
    parser.add_argument("--accept-jwt", action="store_true",
                        help="accept Entra ID / jwt tokens without verifying them (tests of managed identity)")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow --host to be a non-loopback address (requires a --key of your own)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv for debug)")
    return parser


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (2 for usage or config errors)."""
    args = build_parser().parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = args.config
    if config is None:
        config = DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else Path("infra/servicebus-emulator/Config.json")
    if args.min_free_mb < 0:
        print(f"sbworker localbus: error: --min-free-mb must be 0 or more, got {args.min_free_mb:g}", file=sys.stderr)
        return 2
    try:
        check_exposure(args.host, args.key, args.allow_remote)
    except ExposureError as exc:
        print(f"sbworker localbus: error: {exc}", file=sys.stderr)
        return 2
    if not is_loopback(args.host):
        print(f"sbworker localbus: warning: listening on {args.host}: other machines can reach this broker "
              "(no TLS; anyone with the key can read and write every queue)", file=sys.stderr)
    try:
        bus = LocalBus(host=args.host, port=args.port, config_path=config, data_path=args.data, key=args.key,
                       key_name=args.key_name, accept_jwt=args.accept_jwt, allow_remote=args.allow_remote,
                       min_free_bytes=int(args.min_free_mb * 2**20))
        bus.start()
    except (ConfigError, StorageError) as exc:
        where = f"--data {args.data}: " if isinstance(exc, StorageError) else ""
        print(f"sbworker localbus: error: {where}{exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"sbworker localbus: error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1

    # The handlers only append to a list: one that set a threading.Event could run inside the main thread's own
    # Event.wait while it held the Event's lock, and wait for that lock for ever (SIGTERM then went unanswered).
    received: list[int] = []
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda number, _frame: received.append(number))
    queues = ", ".join(sorted(bus.queues)) or "(none)"
    where = f"data in {args.data}" if args.data else "memory only"
    topics = "; topics: " + ", ".join(f"{name} ({', '.join(spec.subscriptions) or 'no subscriptions'})"
                                      for name, spec in sorted(bus.topics.items())) if bus.topics else ""
    print(f"localbus listening on {args.host}:{bus.port} ({where}); queues: {queues}{topics}", file=sys.stderr)
    print(bus.connection_string, flush=True)
    try:
        while not received:
            if not bus.running:
                print("sbworker localbus: error: server stopped unexpectedly", file=sys.stderr)
                return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        bus.stop()
    return 0
