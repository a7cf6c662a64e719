"""Waiting for the stack's state from inside the test process: one DTS or Service Bus client polled every 50 ms.

A command-line test that polled `sbworker status` or `sbworker dlq` started a Python process per poll (about half a
CPU-second of imports each, seconds of wall time on the shared machine); it waits here instead and then asks the
command once, so every command's output is still what the test checks.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from azure.servicebus import ServiceBusClient, ServiceBusSubQueue

from sbworker.core import clients, config
from sbworker.core.entities import Entity
from tests.support.wait import until


def instance_shows(env: Mapping[str, str], instance_id: str, text: str, *, timeout: float = 30) -> None:
    """Until `text` is in the instance's runtime status, custom status or output (as DTS holds them) on the DTS of
    `env` (an `sbworker_env`)."""
    settings = config.load({"DTS_CONNECTION_STRING": env["DTS_CONNECTION_STRING"]}).dts
    client = clients.dts_client(settings)
    try:
        def seen() -> bool:
            try:
                state = client.get_orchestration_state(instance_id)
            except grpc.RpcError as error:
                # A poll that could not connect (once under load: "tcp handshaker shutdown") is another try, not
                # the test's outcome; a DTS that stays away still ends the wait with its timeout.
                if error.code() is grpc.StatusCode.UNAVAILABLE:  # type: ignore[attr-defined]
                    return False
                raise
            if state is None:
                return False
            return text in f"{state.runtime_status.name} {state.serialized_custom_status} {state.serialized_output}"

        until(seen, what=f"instance {instance_id} showing {text!r}", timeout=timeout)
    finally:
        client.close()


def dead_lettered(env: Mapping[str, str], entity: Entity, text: str, *, timeout: float = 30) -> None:
    """Until a message whose id is `text`, or whose body contains it, is in `entity`'s dead-letter queue on the
    broker of `env`."""
    with ServiceBusClient.from_connection_string(env["SERVICEBUS_CONNECTION_STRING"]) as client, \
            entity.receiver(client, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as receiver:
        def seen() -> bool:
            peeked = receiver.peek_messages(max_message_count=100, sequence_number=1)
            return any(str(m.message_id) == text or text.encode() in b"".join(m.body) for m in peeked)

        until(seen, what=f"a dead letter containing {text!r} in {entity.path}", timeout=timeout, interval=0.1)
