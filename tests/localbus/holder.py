"""Child process for the SIGKILL test: lock N messages, report their sequence numbers, then hang."""

from __future__ import annotations

import sys
import time

from azure.servicebus import ServiceBusClient, ServiceBusReceivedMessage


def main() -> None:
    connection_string, queue, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    client = ServiceBusClient.from_connection_string(connection_string)
    receiver = client.get_queue_receiver(queue)
    receiver.__enter__()
    got: list[ServiceBusReceivedMessage] = []
    while len(got) < count:
        got += receiver.receive_messages(max_message_count=count - len(got), max_wait_time=5)
    print("LOCKED", *(m.sequence_number for m in got), flush=True)
    time.sleep(600)  # hold the locks until killed


if __name__ == "__main__":
    main()
