"""The reference a user would write from the SDK docs: a synchronous loop, ten messages at a time.

`receive_messages(max_message_count=10)`, then for each message `schedule_new_orchestration` and
`complete_message`, as the azure-servicebus and durabletask quick starts show them. No prefetch, no concurrency,
no schema validation. It reads the same environment as `sbworker run` (SERVICEBUS_CONNECTION_STRING,
SERVICEBUS_QUEUE, DTS_CONNECTION_STRING, TASKHUB_NAME) and runs until SIGTERM/SIGINT:
`python -m bench.naive_sync`. The bench compares sbworker with it (README, Performance).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from types import FrameType

from azure.servicebus import ServiceBusClient
from durabletask.azuremanaged.client import DurableTaskSchedulerClient


def dts_settings(connection_string: str) -> tuple[str, bool]:
    """(host address, secure) from `Endpoint=http://host:port;Authentication=None` (the DTS guide's format)."""
    fields = dict(part.split("=", 1) for part in connection_string.split(";") if "=" in part)
    endpoint = fields["Endpoint"]
    return endpoint, endpoint.startswith("https://")


def main() -> int:
    stopping = False

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    endpoint, secure = dts_settings(os.environ["DTS_CONNECTION_STRING"])
    dts = DurableTaskSchedulerClient(host_address=endpoint, secure_channel=secure, token_credential=None,
                                     taskhub=os.environ.get("TASKHUB_NAME", "default"))
    with ServiceBusClient.from_connection_string(os.environ["SERVICEBUS_CONNECTION_STRING"]) as client, \
            client.get_queue_receiver(os.environ["SERVICEBUS_QUEUE"]) as receiver:
        while not stopping:
            for message in receiver.receive_messages(max_message_count=10, max_wait_time=1):
                try:
                    request = json.loads(str(message))
                    dts.schedule_new_orchestration(request["orchestration"], input=request.get("input"),
                                                   instance_id=request.get("instance_id") or message.message_id)
                except Exception as error:
                    print(f"abandoning {message.message_id}: {error}", file=sys.stderr)
                    receiver.abandon_message(message)
                else:
                    receiver.complete_message(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
