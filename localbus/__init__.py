"""A small Service Bus-compatible AMQP 1.0 broker for development and tests.

Start it with ``sbworker localbus`` or embed it::

    with LocalBus(port=0) as bus:
        client = ServiceBusClient.from_connection_string(bus.connection_string)
"""

from .config import ConfigError, QueueSettings, load_config
from .server import ExposureError, LocalBus, connection_string
from .store import StorageError

__all__ = ["ConfigError", "ExposureError", "LocalBus", "QueueSettings", "StorageError", "connection_string",
           "load_config"]
