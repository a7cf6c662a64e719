"""Large-payload storage (DTS_PAYLOAD_STORAGE) against Azurite, the Azure Storage emulator, and localdts.

DTS holds one payload up to 1 MB; the durabletask SDK can keep larger ones in Azure Blob storage and send a
reference instead. Configured, `sbworker run` hands its store to the worker and to the listener's DTS client: a
start published through the queue and a 2 MiB result (which localdts, like DTS, refuses inline) both arrive,
and DTS holds only blob references. Azurite comes from npm (`package-lock.json` pinned, `npm ci` once); without
node or npm the test skips, except in CI (CI set), where it fails.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage
from durabletask.client import OrchestrationStatus

from listener import service
from localbus import LocalBus
from localdts import LocalDts
from orchestrations import registry
from sbworker.core import clients, config
from tests.fixtures.node import node_with_packages

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
QUEUE = "workflow-requests"
# Azurite's documented development account (public, like the Service Bus emulator's SAS_KEY_VALUE).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A blob service on a free port; yields its connection string."""
    node_with_packages(HERE, "running Azurite for the large-payload test")
    location = tmp_path_factory.mktemp("azurite")
    proc = subprocess.Popen([str(HERE / "node_modules" / ".bin" / "azurite-blob"), "--blobHost", "127.0.0.1",
                             "--blobPort", "0", "--location", str(location), "--skipApiVersionCheck", "--loose",
                             "--silent"],
                            cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        deadline, port = time.monotonic() + 60, None
        while port is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "azurite-blob exited before it listened"
            found = re.search(r"listens on http://127\.0\.0\.1:(\d+)", line)
            port = int(found.group(1)) if found else None
        assert port is not None, "azurite-blob did not say where it listens"
        yield (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
               f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT};")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def _blobs(connection_string: str, container: str) -> list[str]:
    from azure.storage.blob import BlobServiceClient

    with BlobServiceClient.from_connection_string(connection_string) as blob_service:
        return [b.name for b in blob_service.get_container_client(container).list_blobs()]


async def test_payloads_past_dts_s_limit_go_through_blob_storage(azurite: str) -> None:
    with LocalBus(port=0, queues={QUEUE: {"LockDuration": "PT30S"}}) as bus, LocalDts(port=0) as dts:
        settings = config.load({
            "SERVICEBUS_CONNECTION_STRING": bus.connection_string, "SERVICEBUS_QUEUE": QUEUE,
            "DTS_CONNECTION_STRING": dts.connection_string, "HEALTH_PORT": "0",
            "DTS_PAYLOAD_STORAGE": azurite, "DTS_PAYLOAD_CONTAINER": "sbworker-test-payloads",
            "DTS_PAYLOAD_THRESHOLD_BYTES": "65536", "MAX_INPUT_BYTES": "4194304",
        })
        version = registry.version_of("workflow_with_retry")
        stop = asyncio.Event()
        served = asyncio.create_task(service.serve(settings, stop=stop))
        with_store = clients.dts_client(settings.dts)
        plain = clients.dts_client(config.parse_dts(dts.connection_string))  # no store: sees what DTS holds
        try:
            # 1. Through the queue: a 150 KB input, over the threshold, leaves the listener as a blob reference.
            result = {"report": "r" * 150_000}
            body = json.dumps({"orchestration": "workflow_with_retry", "input": {"result": result}})
            with ServiceBusClient.from_connection_string(bus.connection_string) as sb, \
                    sb.get_queue_sender(QUEUE) as sender:
                sender.send_messages(ServiceBusMessage(body, subject="start", message_id="via-queue",
                                                       content_type="application/json"))
            state = await asyncio.to_thread(_finished, with_store, "via-queue")
            assert json.loads(state.serialized_output or "null") == result
            held: Any = await asyncio.to_thread(plain.get_orchestration_state, "via-queue")
            assert held.serialized_input.startswith("blob:v1:sbworker-test-payloads:")
            assert held.serialized_output.startswith("blob:v1:sbworker-test-payloads:")

            # 2. A 2 MiB result, twice DTS's limit for one payload: localdts refuses it inline, as DTS does ...
            big = {"result": "b" * (2 * 1024 * 1024)}
            with pytest.raises(grpc.RpcError, match=r"INVALID_ARGUMENT") as refused:
                await asyncio.to_thread(plain.schedule_new_orchestration, "workflow_with_retry", input=big,
                                        version=version)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            # ... and takes it as a reference.
            iid = await asyncio.to_thread(with_store.schedule_new_orchestration, "workflow_with_retry", input=big,
                                          version=version)
            state = await asyncio.to_thread(_finished, with_store, iid)
            assert json.loads(state.serialized_output or "null") == big["result"]
            names = await asyncio.to_thread(_blobs, azurite, "sbworker-test-payloads")
            assert any(name.startswith(f"{iid}/") for name in names), names
        finally:
            stop.set()
            await asyncio.wait_for(served, 60)
            with_store.close()
            plain.close()


def _finished(client: Any, instance_id: str) -> Any:
    deadline = time.monotonic() + 60
    while (state := client.get_orchestration_state(instance_id)) is None:  # the start may still be in the queue
        assert time.monotonic() < deadline, f"{instance_id} never started"
        time.sleep(0.2)
    state = client.wait_for_orchestration_completion(instance_id, timeout=60)
    assert state is not None and state.runtime_status == OrchestrationStatus.COMPLETED, state.failure_details
    return state
