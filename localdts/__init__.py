"""A local Durable Task Scheduler backend that keeps its orchestrations: the SDK's in-memory backend, made durable.

Start it with ``sbworker dts`` (``python -m localdts``) or embed it::

    with LocalDts(port=0, data_path=".localdata") as dts:
        client = DurableTaskSchedulerClient(host_address=dts.endpoint, taskhub="default",
                                            token_credential=None, secure_channel=False)
"""

from .backend import DurableBackend
from .server import ExposureError, LocalDts, connection_string
from .store import DataFileError

__all__ = ["DataFileError", "DurableBackend", "ExposureError", "LocalDts", "connection_string"]
