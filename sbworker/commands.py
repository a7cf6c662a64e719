"""The people-facing commands: publish, status, list, watch, dlq. Arguments are checked before anything is sent.

Each command imports what it uses when it runs: `publish` and `dlq` load the Service Bus SDK, `status`, `list` and
`watch` the durabletask one, and neither loads the other (README "Publish and monitor").
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sbworker.core import clients
from sbworker.core.codes import Exit
from sbworker.core.errors import UsageError, one_line

if TYPE_CHECKING:
    from sbworker.core.config import Settings
    from sbworker.observability.config import TelemetrySettings


def dispatch(args: argparse.Namespace, settings: Settings, telemetry_settings: TelemetrySettings) -> int:
    try:
        if args.command == "publish":
            return _publish(args, settings, telemetry_settings)
        if args.command == "status":
            return _status(args, settings)
        if args.command == "list":
            return _list(args, settings)
        if args.command == "watch":
            return _watch(args, settings)
        if args.command == "dlq":
            return _dlq(args, settings)
    except UsageError as error:
        print(f"sbworker {args.command}: error: {error}", file=sys.stderr)
        return Exit.USAGE
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return Exit.INTERRUPTED
    except Exception as error:  # the SDKs' errors: one line, no traceback
        print(f"sbworker {args.command}: failed: {one_line(error, 450)}", file=sys.stderr)
        return Exit.FAILED
    raise AssertionError(f"unknown command {args.command}")


def _publish(args: argparse.Namespace, settings: Settings, telemetry_settings: TelemetrySettings) -> int:
    """Build with the Publisher (the listener's own checks), then send, traced when an exporter is configured."""
    from orchestrations import registry
    from sbworker.core.contract import Rejected
    from sbworker.observability import telemetry
    from sbworker.operations.publisher import Publisher

    if args.kind == "start" and not registry.is_startable(args.orchestration):
        raise UsageError(f"unknown orchestration {args.orchestration!r}; valid names: "
                         f"{', '.join(registry.orchestration_names())}")
    approver = (_user() if args.approver is None else args.approver) if args.kind == "approve" else ""
    observed = telemetry.setup(telemetry_settings, metrics=False)
    try:
        with Publisher.from_settings(settings, cloudevents="structured" if args.cloudevents else None,
                                     traced=observed.tracer is not None) as publisher:
            try:
                if args.kind == "start":
                    outgoing = publisher.messages.start(args.orchestration, _json_option(args.input, "--input"),
                                                        instance_id=args.instance_id,
                                                        start_at=_start_at(args.start_at), session_id=args.session_id)
                elif args.kind == "approve":
                    outgoing = publisher.messages.approval(args.instance_id, not args.reject, approver, args.comment,
                                                           session_id=args.session_id)
                else:
                    outgoing = publisher.messages.event(args.instance_id, args.name,
                                                        _json_option(args.data, "--data"), session_id=args.session_id)
            except Rejected as rejected:
                raise UsageError(f"{rejected} ({rejected.reason})") from None
            except ValueError as error:  # a session id Service Bus would refuse
                raise UsageError(f"--session-id: {error}") from None
            sent = publisher.send(outgoing)
    finally:
        observed.shutdown()
    if args.kind == "approve":
        print(f"{'rejection' if args.reject else 'approval'} by {approver} sent for instance {sent.instance_id}")
    elif args.kind == "event":
        print(f"event {args.name} sent for instance {sent.instance_id}")
    else:
        print(f"instance_id: {sent.instance_id}")
    print(f"message_id:  {sent.message_id}")
    if sent.session_id:
        print(f"session_id:  {sent.session_id}")
    if sent.event_id:
        print(f"event_id:    {sent.event_id} (CloudEvents, structured)")
    if sent.trace_id:
        print(f"trace_id:    {sent.trace_id}")
    return Exit.OK


def contract(args: argparse.Namespace) -> int:
    """`sbworker contract --asyncapi [--output FILE]`."""
    from sbworker.operations import asyncapi

    text = asyncapi.to_yaml(asyncapi.document())
    if args.output is None:
        sys.stdout.write(text)
        return Exit.OK
    try:
        args.output.write_text(text, encoding="utf-8")
    except OSError as error:
        print(f"sbworker contract: error: --output: cannot write {str(args.output)!r}: {error.strerror}",
              file=sys.stderr)
        return Exit.USAGE
    print(f"wrote {args.output}")
    return Exit.OK


def _json_option(raw: str | None, option: str) -> Any:
    """JSON given inline, or @file.json."""
    if raw is None:
        return None
    text = raw
    if raw.startswith("@"):
        try:
            text = Path(raw[1:]).read_text(encoding="utf-8")
        except OSError as error:
            raise UsageError(f"{option}: cannot read {raw[1:]!r}: {error.strerror}") from None
    try:
        return json.loads(text)
    except ValueError as error:
        raise UsageError(f"{option} is not valid JSON: {error}") from None


def _start_at(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise UsageError(f"--start-at: not an ISO-8601 time: {raw!r}") from None
    if moment.tzinfo is None:
        raise UsageError(f"--start-at needs a timezone, e.g. {raw}Z")
    return moment


def _user() -> str:
    try:
        return getpass.getuser() or "unknown"
    except Exception:
        return "unknown"


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from sbworker.operations import monitor

    with clients.dts_client(settings.dts) as client:
        state = client.get_orchestration_state(args.instance_id)
    if state is None:
        if args.json:
            print(json.dumps({"instance_id": args.instance_id, "exists": False}))
        else:
            print(f"no instance {args.instance_id!r} in task hub {settings.dts.taskhub!r}", file=sys.stderr)
        return Exit.FAILED
    print(json.dumps(monitor.as_dict(state), indent=2) if args.json else monitor.render(state))
    return Exit.OK


def _list(args: argparse.Namespace, settings: Settings) -> int:
    from sbworker.operations import monitor

    statuses = [monitor.STATUS_NAMES[s] for s in args.status] if args.status else None
    with clients.dts_client(settings.dts) as client:
        states = monitor.list_instances(client, statuses, args.limit)
    if args.json:
        print(json.dumps([monitor.as_dict(s) for s in states], indent=2))
    elif states:
        print(monitor.render_table(states))
    else:
        print("no instances")
    return Exit.OK


def _watch(args: argparse.Namespace, settings: Settings) -> int:
    from sbworker.operations import monitor

    with clients.dts_client(settings.dts) as client:
        state = monitor.watch(client, args.instance_id, lambda line: print(line, flush=True),
                              interval=max(0.05, args.interval))
    if state is None:
        print(f"no instance {args.instance_id!r} appeared in task hub {settings.dts.taskhub!r}", file=sys.stderr)
        return Exit.FAILED
    print(f"output: {state.serialized_output}")
    if state.failure_details is not None:
        print(f"failure: {state.failure_details.error_type}: {state.failure_details.message}")
    return Exit.OK if state.runtime_status == monitor.OrchestrationStatus.COMPLETED else Exit.FAILED


def _dlq(args: argparse.Namespace, settings: Settings) -> int:
    """One dead-letter queue per entity the listener reads: the queue's; or the subscription's and the retry queue's."""
    from sbworker.core.entities import Entity
    from sbworker.operations import dlq

    source = settings.servicebus.source
    if args.retry_queue and source.topic is None:
        raise UsageError("--retry-queue: only with SERVICEBUS_TOPIC + SERVICEBUS_SUBSCRIPTION (a queue retries on "
                         "itself)")
    entities = [Entity(source.retry_queue)] if args.retry_queue else list(source.receive_from)
    if args.dlq_command == "resubmit":
        if args.all == bool(args.sequence_numbers):
            raise UsageError("give sequence numbers or --all (not both)")
        wanted = None if args.all else set(args.sequence_numbers)
        # Sequence numbers belong to one entity: without --all they name the subscription's (or the queue's).
        chosen = entities if args.all else entities[:1]
        missing: list[int] = []
        refused: dict[int, str] = {}
        with clients.servicebus_sync_client(settings.servicebus) as client:
            for entity in chosen:
                result = dlq.resubmit(client, source, entity, wanted)
                where = f" from the dead-letter queue of {entity}" if source.topic is not None else ""
                print(f"resubmitted {len(result.done)} message(s){where} to {source.retry_queue!r}: "
                      f"{' '.join(map(str, result.done)) or '-'}")
                if result.arrived_since:
                    print(f"left {result.arrived_since} message(s) dead-lettered after the resubmit started "
                          "(run it again to include them)")
                missing = result.missing
                refused.update(result.refused)
        for seq, why in sorted(refused.items()):
            print(f"left {seq} in the dead-letter queue: it {why}", file=sys.stderr)
        if missing:
            print(f"not found in the dead-letter queue: {' '.join(map(str, missing))}", file=sys.stderr)
        return Exit.FAILED if missing or refused else Exit.OK
    with clients.servicebus_sync_client(settings.servicebus) as client:
        found = [(entity, dlq.peek(client, entity, args.peek)) for entity in entities]
    if args.json:
        print(json.dumps([{**item.__dict__, "entity": entity.path} for entity, items in found for item in items],
                         indent=2))
        return Exit.OK
    for entity, items in found:
        if not items:
            print(f"the dead-letter queue of {entity} is empty")
            continue
        if len(found) > 1:
            print(f"dead-letter queue of {entity}:")
        for item in items:
            session = f"  session_id={item.session_id}" if item.session_id is not None else ""
            print(f"#{item.sequence_number}  message_id={item.message_id}  subject={item.subject}{session}  "
                  f"enqueued={item.enqueued_time}\n    reason:      {item.reason}\n"
                  f"    description: {item.description}\n    body:        {item.body_preview}")
    return Exit.OK
