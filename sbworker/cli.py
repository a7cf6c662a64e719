"""The `sbworker` command: run the service, the embedded stack, the local broker, and the operator commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

from sbworker import LOCAL_CONFIG
from sbworker.core import config
from sbworker.core.codes import Exit
from sbworker.core.errors import UserError
from sbworker.observability import config as observability_config
from sbworker.observability import logs


class Parser(argparse.ArgumentParser):
    """Bad arguments → one clear line and exit code 2 (argparse would print the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(Exit.USAGE, f"{self.prog}: error: {message} (see --help)\n")


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
                         description="Start localbus, the local DTS backend (localdts) and `sbworker run` against "
                                     "them. Messages and orchestrations are kept in --data across restarts.",
                         epilog="example: sbworker dev --data .localdata")
    dev.add_argument("--host", default="127.0.0.1",
                     help="address every part listens on (default 127.0.0.1; anything else needs --allow-remote "
                          "and --key)")
    dev.add_argument("--allow-remote", action="store_true",
                     help="allow a non-loopback --host (the DTS endpoint has no authentication)")
    dev.add_argument("--key", help="localbus SAS key (default: the emulator's well-known key, loopback only)")
    dev.add_argument("--servicebus-port", type=_port, default=5672, help="localbus port (default 5672)")
    dev.add_argument("--dts-port", type=_port, default=8080, help="local DTS backend port (default 8080)")
    kept = dev.add_mutually_exclusive_group()
    kept.add_argument("--data", type=Path, default=Path(".localdata"),
                      help="where messages and orchestrations are kept across restarts (default .localdata)")
    kept.add_argument("--memory", action="store_true", help="keep everything in memory only")
    dev.add_argument("--no-demo", action="store_true",
                     help="skip running the four workflows through the queue at start-up")
    dev.add_argument("--config", type=Path, default=None,
                     help="emulator Config.json with the queues (default: the one shipped with sbworker, which "
                          "infra/servicebus-emulator/Config.json links to)")

    sub.add_parser("dts", help="run only the local durable DTS backend (see `sbworker dts -h`)", add_help=False)
    sub.add_parser("localbus", help="run only the local Service Bus-compatible broker (see `sbworker localbus -h`)",
                   add_help=False)
    dev.add_argument("--dashboard-port", type=_port, default=8082,
                     help="where the dashboard listens (default 8082, the emulator dashboard's port; 0 disables)")
    dev.add_argument("--topic", action="store_true",
                     help=f"read subscription {config.DEFAULT_SUBSCRIPTION!r} of topic {config.DEFAULT_TOPIC!r} "
                          "instead of the queue (the same as setting SERVICEBUS_TOPIC and SERVICEBUS_SUBSCRIPTION)")
    dev.add_argument("--sessions", action="store_true",
                     help=f"session mode: read the session-enabled queue {config.DEFAULT_SESSION_QUEUE!r} (with "
                          f"--topic: subscription {config.DEFAULT_SESSION_SUBSCRIPTION!r}), each session's messages "
                          "one at a time, in order (the same as setting SERVICEBUS_SESSIONS=true)")

    dashboard = sub.add_parser("dashboard", help="a web page for the instances and the queue",
                               description="Serve the dashboard for the configured DTS task hub and queue until "
                                           "Ctrl-C. It binds 127.0.0.1 unless --host says otherwise; another "
                                           "address needs --allow-remote and an authentication mode "
                                           "(DASHBOARD_TOKEN, or --auth entra behind Container Apps "
                                           "authentication), and is read-only unless --allow-actions.",
                               epilog="examples: sbworker dashboard --port 8082 | DASHBOARD_TOKEN=... sbworker "
                                      "dashboard --host 0.0.0.0 --allow-remote --allowed-host ops.example.com")
    dashboard.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    dashboard.add_argument("--port", type=_port, default=8082, help="TCP port (default 8082)")
    dashboard.add_argument("--allow-remote", action="store_true",
                           help="allow a non-loopback --host (needs DASHBOARD_TOKEN or --auth entra)")
    dashboard.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                           help="also answer to this Host name (repeatable; localhost, 127.0.0.1 and ::1 always)")
    dashboard.add_argument("--auth", choices=("token", "entra"),
                           help="token: DASHBOARD_TOKEN as a Bearer token or through the login page (the default "
                                "when it is set); entra: trust Container Apps authentication's identity headers")
    acting = dashboard.add_mutually_exclusive_group()
    acting.add_argument("--allow-actions", action="store_true", default=None,
                        help="allow changes (terminate, purge, resubmit…) when remote: read-only otherwise")
    acting.add_argument("--read-only", dest="allow_actions", action="store_false",
                        help="refuse every change, even on loopback")
    dashboard.add_argument("--action-role", metavar="ROLE",
                           help="with --auth entra: the app role a user needs for changes (default "
                                "Dashboard.Operator)")
    dashboard.add_argument("--taskhub", action="append", default=[], metavar="NAME",
                           help="also offer this task hub in a selector (repeatable; default DASHBOARD_TASKHUBS, "
                                "comma-separated); the configured TASKHUB_NAME comes first")
    dashboard.add_argument("--tls-cert", type=Path, metavar="FILE", help="serve HTTPS with this certificate (PEM)")
    dashboard.add_argument("--tls-key", type=Path, metavar="FILE", help="the certificate's private key (PEM)")
    _add_operator_commands(sub)
    return parser


def _add_operator_commands(sub: argparse._SubParsersAction) -> None:
    publish = sub.add_parser("publish", help="publish a start, an approval or a declared event to the queue",
                             description="Send a message that follows the contract to SERVICEBUS_QUEUE (or the "
                                         "topic). It is checked by the listener's own parser first: what the "
                                         "listener would dead-letter is refused here, with its reason.")
    _cloudevents_option(publish, default=False)
    kinds = publish.add_subparsers(dest="kind", required=True, metavar="KIND", parser_class=Parser)
    start = kinds.add_parser(
        "start", help="start an orchestration",
        description="Publish a start message; prints the instance id and the message id.",
        epilog="example: sbworker publish start approval_workflow --input '{\"item\": \"laptop\"}'",
    )
    start.add_argument("orchestration", help="a registered orchestration name")
    start.add_argument("--input", help="JSON input, or @file.json to read it from a file")
    start.add_argument("--instance-id", help="instance id (default: the message id)")
    start.add_argument("--start-at", help="ISO-8601 UTC time to start at, e.g. 2026-12-01T09:00:00Z")
    _session_option(start)
    _cloudevents_option(start)
    approve = kinds.add_parser(
        "approve", help="approve (or --reject) a waiting approval_workflow instance",
        description="Publish an approval message for an instance waiting for ApprovalEvent.",
        epilog="example: sbworker publish approve 3f2a... --approver ada --comment 'within budget'",
    )
    approve.add_argument("instance_id", help="the instance waiting for approval")
    approve.add_argument("--reject", action="store_true", help="reject instead of approve")
    approve.add_argument("--approver", help="who decides (default: your user name)")
    approve.add_argument("--comment", help="an optional comment")
    _session_option(approve)
    _cloudevents_option(approve)
    event = kinds.add_parser(
        "event", help="raise a declared event (see orchestrations/events.py) on a waiting instance",
        description="Publish an event message: the event must be declared, and its data must satisfy the event's "
                    "JSON Schema.",
        epilog="example: sbworker publish event invoice-42 PaymentReceived "
               "--data '{\"amount_cents\": 4500, \"currency\": \"EUR\", \"reference\": \"psp-1\"}'",
    )
    event.add_argument("instance_id", help="the instance waiting for the event")
    event.add_argument("name", help="the declared event name, e.g. PaymentReceived")
    event.add_argument("--data", default="{}", help="the event's data as JSON, or @file.json (default {})")
    _session_option(event)
    _cloudevents_option(event)

    described = sub.add_parser(
        "contract", help="the message contract as a document (AsyncAPI 3.0)",
        description="Print the message contract as an AsyncAPI 3.0 document (YAML), generated from the schemas the "
                    "listener validates with; docs/asyncapi.yaml is this output.",
        epilog="example: sbworker contract --asyncapi --output docs/asyncapi.yaml",
    )
    described.add_argument("--asyncapi", action="store_true", required=True,
                           help="AsyncAPI 3.0, as YAML (the one format there is)")
    described.add_argument("--output", type=Path, metavar="FILE", help="write it to FILE instead of stdout")

    status = sub.add_parser("status", help="show one instance (exit code 1 when it does not exist)",
                            description="Show an instance's status, custom status, input, output and failure.",
                            epilog="example: sbworker status 3f2a... --json")
    status.add_argument("instance_id")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    lst = sub.add_parser("list", help="list instances, newest first",
                         description="List orchestration instances in the task hub, newest first.",
                         epilog="example: sbworker list --status running --limit 20")
    status_option = lst.add_argument("--status", action="append", help="only this runtime status (repeatable)")
    # Set after add_argument, which would list them at once to check the option's metavar: read from the SDK only
    # when `list` parses or shows --status.
    status_option.choices = StatusNames()
    lst.add_argument("--limit", type=_positive_int, default=50, help="at most N rows (default 50)")
    lst.add_argument("--json", action="store_true", help="machine-readable output")

    watch = sub.add_parser("watch", help="follow an instance live until it finishes",
                           description="Print status and custom-status changes until the instance finishes.",
                           epilog="example: sbworker watch 3f2a...")
    watch.add_argument("instance_id")
    watch.add_argument("--interval", type=float, default=0.5, help="poll interval in seconds (default 0.5)")

    dlq = sub.add_parser("dlq", help="show dead-lettered messages, or resubmit them",
                         description="Show the dead-letter queue with reasons; `dlq resubmit` sends messages back.",
                         epilog="examples: sbworker dlq --peek 20 | sbworker dlq resubmit 42 | "
                                "sbworker dlq resubmit --all")
    dlq.add_argument("--peek", type=_positive_int, default=20, metavar="N", help="show up to N (default 20)")
    dlq.add_argument("--json", action="store_true", help="machine-readable output")
    dlq.add_argument("--retry-queue", action="store_true",
                     help="topic form: only the retry queue's dead-letter queue (approvals whose instance never "
                          "appeared); without it, the subscription's and then the retry queue's")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", metavar="[resubmit]", parser_class=Parser)
    resubmit = dlq_sub.add_parser(
        "resubmit", help="send dead-lettered messages back to the queue and complete their DLQ copies",
        description="Send dead-lettered messages back to the queue (after a fix) and complete the DLQ copies. In the "
                    "topic form they go to the retry queue, which only this worker reads.",
        epilog="example: sbworker dlq resubmit 42 43 | sbworker dlq resubmit --all",
    )
    resubmit.add_argument("sequence_numbers", nargs="*", type=int, metavar="SEQUENCE_NUMBER")
    resubmit.add_argument("--all", action="store_true", help="resubmit every dead-lettered message")
    resubmit.add_argument("--retry-queue", action="store_true", default=argparse.SUPPRESS,
                          help="topic form: the sequence numbers are the retry queue's")


def _session_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--session-id", metavar="KEY",
                        help="the session to send it in (a session-enabled queue handles each session's messages in "
                             "order); default with SERVICEBUS_SESSIONS=true: the instance id")


def _cloudevents_option(parser: argparse.ArgumentParser, default: Any = argparse.SUPPRESS) -> None:
    """Before or after KIND: `publish --cloudevents start ...` and `publish start ... --cloudevents` both work."""
    parser.add_argument("--cloudevents", action="store_true", default=default,
                        help="send it as a CloudEvent (structured mode, application/cloudevents+json; the message "
                             "id is the event id)")


class StatusNames:
    """The durabletask SDK's runtime statuses in lower case, sorted (`list --status`'s choices): looked up when
    used, so building the parser (`sbworker --help`, every other command) does not import the SDK."""

    def _names(self) -> list[str]:
        from durabletask.client import OrchestrationStatus

        return sorted(s.name.lower() for s in OrchestrationStatus)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __contains__(self, name: object) -> bool:
        return name in self._names()


def _port(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {raw!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535, got {value}")
    return value


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {raw!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {raw!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    if args_list and args_list[0] == "dts":
        try:
            from localdts import cli as localdts_cli
        except ImportError:
            print("sbworker dts: needs the local extra: pip install 'sbworker[local]'", file=sys.stderr)
            return Exit.USAGE
        return localdts_cli.main(args_list[1:])
    if args_list and args_list[0] == "localbus":
        # localbus owns its arguments; it is importable only with the `local` extra.
        try:
            from localbus import cli as localbus_cli
        except ImportError:
            print("sbworker localbus: needs python-qpid-proton: pip install 'sbworker[local]'", file=sys.stderr)
            return Exit.USAGE
        rest = args_list[1:]
        if not any(arg == "--config" or arg.startswith("--config=") for arg in rest):
            rest = ["--config", str(LOCAL_CONFIG), *rest]
        return localbus_cli.main(rest)
    args = build_parser().parse_args(args_list)
    if args.command == "contract":  # needs no configuration: it describes the contract, not a deployment
        from sbworker import commands

        return commands.contract(args)
    try:
        settings = config.load()
        telemetry_settings = observability_config.load()
        logs.configure(settings.listener.log_level, settings.secrets() + telemetry_settings.secrets())
        if args.command == "run":
            from listener import service
            from sbworker.core import event_loop
            from sbworker.observability import telemetry

            # Before the worker starts: its spans use the global tracer provider that setup installs.
            observed = telemetry.setup(telemetry_settings, scrape=settings.listener.health_port != 0)
            return event_loop.run(service.serve(settings, telemetry=observed, with_worker=not args.no_worker,
                                                with_listener=not args.no_listener), settings.listener.event_loop)
        if args.command == "dev":
            from sbworker import dev

            return dev.run_dev(servicebus_port=args.servicebus_port, dts_port=args.dts_port, host=args.host,
                               allow_remote=args.allow_remote, key=args.key,
                               data_dir=None if args.memory else args.data,
                               config_path=args.config or LOCAL_CONFIG,
                               demo=not args.no_demo, dashboard_port=args.dashboard_port, topic=args.topic,
                               sessions=args.sessions)
        if args.command == "dashboard":
            from sbworker import dev

            return dev.run_dashboard(settings, host=args.host, port=args.port, allow_remote=args.allow_remote,
                                     auth=args.auth, allowed_hosts=args.allowed_host, actions=args.allow_actions,
                                     action_role=args.action_role, tls_cert=args.tls_cert, tls_key=args.tls_key,
                                     taskhubs=args.taskhub)
        from sbworker import commands

        return commands.dispatch(args, settings, telemetry_settings)
    except UserError as error:
        print(f"sbworker {args.command}: {error}" if not str(error).startswith("configuration error")
              else str(error), file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return Exit.OK


if __name__ == "__main__":
    sys.exit(main())
