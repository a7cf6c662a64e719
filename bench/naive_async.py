"""The asyncio reference a user would write from the SDK docs: prefetch 100, AutoLockRenewer, 32 tasks at once.

`async for message in receiver` on a receiver with `prefetch_count=100` and an `AutoLockRenewer`; each message
becomes a task (at most 32 at a time, an `asyncio.Semaphore`) that calls `schedule_new_orchestration` on the
async DTS client and then `complete_message`. Same environment as `sbworker run`; runs until SIGTERM/SIGINT:
`python -m bench.naive_async`. The bench compares sbworker with it (README, Performance).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

from azure.servicebus import ServiceBusReceivedMessage
from azure.servicebus.aio import AutoLockRenewer, ServiceBusClient, ServiceBusReceiver
from durabletask.azuremanaged.client import AsyncDurableTaskSchedulerClient

from bench.naive_sync import dts_settings

PREFETCH = 100
TASKS = 32


async def run() -> None:
    endpoint, secure = dts_settings(os.environ["DTS_CONNECTION_STRING"])
    dts = AsyncDurableTaskSchedulerClient(host_address=endpoint, secure_channel=secure, token_credential=None,
                                          taskhub=os.environ.get("TASKHUB_NAME", "default"))
    slots = asyncio.Semaphore(TASKS)
    running: set[asyncio.Task[None]] = set()

    async def handle(receiver: ServiceBusReceiver, message: ServiceBusReceivedMessage) -> None:
        try:
            request = json.loads(str(message))
            await dts.schedule_new_orchestration(request["orchestration"], input=request.get("input"),
                                                 instance_id=request.get("instance_id") or message.message_id)
        except Exception as error:
            print(f"abandoning {message.message_id}: {error}", file=sys.stderr)
            await receiver.abandon_message(message)
        else:
            await receiver.complete_message(message)
        finally:
            slots.release()

    async def receive(receiver: ServiceBusReceiver) -> None:
        async for message in receiver:
            await slots.acquire()
            task = asyncio.create_task(handle(receiver, message))
            running.add(task)
            task.add_done_callback(running.discard)

    renewer = AutoLockRenewer()
    async with ServiceBusClient.from_connection_string(os.environ["SERVICEBUS_CONNECTION_STRING"]) as client, \
            client.get_queue_receiver(os.environ["SERVICEBUS_QUEUE"], prefetch_count=PREFETCH,
                                      auto_lock_renewer=renewer) as receiver:
        receiving = asyncio.create_task(receive(receiver))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        receiving.cancel()
        await asyncio.gather(receiving, return_exceptions=True)
        if running:
            await asyncio.wait(set(running))
    await renewer.close()
    await dts.close()


def main() -> int:
    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
