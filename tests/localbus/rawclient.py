"""A plain python-qpid-proton client for localbus: the protocol as any AMQP 1.0 peer would speak it.

The SDK hides the wire; these helpers let tests send exactly what a careless or hostile client would, and read
exactly what localbus answers (dispositions with their error, detaches, closes).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import time
import uuid
from typing import Any
from urllib.parse import quote_plus

from proton import Delivery, Message
from proton.utils import BlockingConnection, BlockingReceiver, BlockingSender

from localbus import LocalBus

SAS_TYPE = "servicebus.windows.net:sastoken"


def sas_token(uri: str, key: str, key_name: str = "RootManageSharedAccessKey", ttl: float = 3600,
              expiry: int | None = None) -> str:
    """A SAS token for ``uri``, signed as Service Bus clients sign them."""
    encoded = quote_plus(uri)
    se = expiry if expiry is not None else int(time.time() + ttl)
    sig = base64.b64encode(hmac.new(key.encode(), f"{encoded}\n{se}".encode(), hashlib.sha256).digest()).decode()
    return f"SharedAccessSignature sr={encoded}&sig={quote_plus(sig)}&se={se}&skn={key_name}"


class RawClient:
    """One proton connection with a ``$cbs`` request/reply pair, for put-token."""

    def __init__(self, bus: LocalBus, timeout: float = 5.0, **kwargs: Any) -> None:
        self.bus = bus
        self.conn = BlockingConnection(f"amqp://127.0.0.1:{bus.port}", timeout=timeout, **kwargs)
        self._cbs_sender: BlockingSender | None = None
        self._cbs_receiver: BlockingReceiver | None = None

    def put_token(self, audience: str, token: str, token_type: str = SAS_TYPE) -> tuple[int, str]:
        """Present a token for ``audience``; returns the reply's (status-code, status-description)."""
        if self._cbs_sender is None:
            self._cbs_sender = self.conn.create_sender("$cbs")
            self._cbs_receiver = self.conn.create_receiver("$cbs", credit=10)
        assert self._cbs_receiver is not None
        request = Message(id=str(uuid.uuid4()), reply_to="$cbs", body=token, properties={
            "operation": "put-token", "type": token_type, "name": audience,
            "expiration": int(time.time() + 3600)})
        self._cbs_sender.send(request)
        reply = self._cbs_receiver.receive()
        self._cbs_receiver.accept()
        props = reply.properties or {}
        return int(props["status-code"]), str(props["status-description"])

    def authorize(self, path: str = "", key: str | None = None, ttl: float = 3600) -> None:
        """Put a SAS token for ``sb://localhost/<path>`` (the namespace when empty) signed with the bus's key."""
        uri = f"sb://localhost:{self.bus.port}/{path}".rstrip("/")
        status, description = self.put_token(uri, sas_token(uri, key or self.bus.key, self.bus.key_name, ttl))
        assert status == 202, description

    def send(self, sender: BlockingSender, message: Message) -> Delivery:
        """Send and wait for the outcome without raising, so the test can read the error."""
        return sender.send(message, error_states=[])

    def send_raw(self, sender: BlockingSender, encoded: bytes) -> Delivery:
        """Send already-encoded message bytes (proton refuses to build some of what hostile clients send)."""
        link = sender.link
        delivery = link.delivery(str(uuid.uuid4()))
        link.send(encoded)
        link.advance()
        self.conn.wait(lambda: delivery.settled or delivery.remote_state != 0, msg="raw send")
        return delivery

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):  # the server may already have closed it: often the point of the test
            self.close()
