"""The `sbworker` command: run the service, the embedded stack, the local broker, and the operator commands."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import NoReturn

from listener import config, logs
from listener.config import ConfigError

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """Bad arguments → one clear line and exit code 2 (argparse would print the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> Parser:
    parser = Parser(
        prog="sbworker",
        description="Turns Azure Service Bus messages into durable orchestrations on the Durable Task Scheduler.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Configuration comes from environment variables; see README.md#configuration.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    run = sub.add_parser("run", help="run the queue listener and the DTS worker (the service)",
                         description="Run the queue listener and the co-hosted DTS worker until SIGTERM/SIGINT.",
                         epilog="example: SERVICEBUS_NAMESPACE=myns sbworker run --no-worker")
    half = run.add_mutually_exclusive_group()
    half.add_argument("--no-worker", action="store_true", help="only the listener (scale the halves separately)")
    half.add_argument("--no-listener", action="store_true", help="only the DTS worker")

    dev = sub.add_parser("dev", help="the whole system on the embedded local stack (what `make run` runs)",
                         description="Start localbus, the in-memory DTS backend and `sbworker run` against them.",
                         epilog="example: sbworker dev --data .localdata")
    dev.add_argument("--servicebus-port", type=int, default=5672, help="localbus port (default 5672)")
    dev.add_argument("--dts-port", type=int, default=8080, help="in-memory DTS backend port (default 8080)")
    dev.add_argument("--data", type=Path, default=Path(".localdata"),
                     help="where localbus keeps messages across restarts (default .localdata)")
    dev.add_argument("--memory", action="store_true", help="keep messages in memory only")
    dev.add_argument("--config", type=Path, default=config.EMULATOR_CONFIG,
                     help="emulator Config.json with the queues (default infra/servicebus-emulator/Config.json)")

    sub.add_parser("localbus", help="run only the local Service Bus-compatible broker (see `sbworker localbus -h`)",
                   add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    if args_list and args_list[0] == "localbus":
        # localbus owns its arguments; it is importable only with the `local` extra.
        try:
            from localbus import cli as localbus_cli
        except ImportError:
            print("sbworker localbus: needs python-qpid-proton: pip install 'sbworker[local]'", file=sys.stderr)
            return EXIT_USAGE
        return localbus_cli.main(args_list[1:])
    args = build_parser().parse_args(args_list)
    try:
        settings = config.load()
        logs.configure(settings.listener.log_level)
        if args.command == "run":
            from listener import service

            return asyncio.run(service.serve(settings, with_worker=not args.no_worker,
                                             with_listener=not args.no_listener))
        if args.command == "dev":
            from listener import dev

            return dev.run_dev(servicebus_port=args.servicebus_port, dts_port=args.dts_port,
                               data_dir=None if args.memory else args.data, config_path=args.config)
    except ConfigError as error:
        print(str(error), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 0
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
