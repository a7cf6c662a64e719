"""Every place we change or read another SDK's private code, behind one version gate.

azure-servicebus 7.x keeps its AMQP stack private (`azure.servicebus._pyamqp`), and three of our fixes need it:
- `amqp_decoding`: decoders for the AMQP types its table lacks, and a decode that reports an undecodable section
  instead of raising inside the link (one odd message otherwise stops the receiver);
- `amqp_io`: settlement writes that do not wait behind idle reads, and outcome waits that do not queue for a read
  (together 20 of the 21 ms from receipt to settlement);
- two reads of private state: how many messages the receiver has prefetched (`buffered`, so a receive call asks
  only for what is there), and whether a message is already settled (`settled`, so the lock keeper lets it go);
  plus a 20 ms socket timeout for the receiver (`receiver_options`), which shortens how long a settlement waits
  for the one lock the SDK shares between reads and writes;
- `release`: hands a received message back with AMQP `released`, which Service Bus does not count as a delivery
  (the SDK does the same to its unread buffer on close, but offers no call for a message it handed out). Acting
  on one dead letter means receiving those ahead of it; they go back untouched.

All of it was read against, and measured with, the versions in VERIFIED. On any other version nothing is
installed and nothing private is read: the SDK keeps its own behaviour (correct; slower, and without the
decoding fix), the service's start-up line says so in a WARNING, and /readyz lists what is active.
tests/integration/test_amqp_io.py fails on an unverified version, so an upgrade cannot skip the re-check.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

# The SDK and the version prefixes whose private code every patch here was read against.
SDK = "azure-servicebus"
VERIFIED = ("7.15.",)

BUFFERED = "receiver.buffered"
SETTLED = "message.settled"
SOCKET_TIMEOUT = "receiver.socket_timeout"
RELEASE = "message.release"
# The SDK settles a message only between two socket reads of the receive call in progress; its default read
# timeout (0.2 s) therefore added 100-200 ms to every settlement while we wait for new messages. 20 ms keeps
# that wait short for about 3% of a core when idle (measured against localbus).
RECEIVER_SOCKET_TIMEOUT = 0.02

_active: list[str] | None = None


def expected() -> list[str]:
    """Every patch this module knows, in the order `install` reports them."""
    from sbworker.patches import amqp_decoding, amqp_io

    return [amqp_decoding.MISSING_TYPES, amqp_decoding.TOLERANT, amqp_io.WRITE_LOCK, amqp_io.OUTCOME_WAIT, BUFFERED,
            SETTLED, SOCKET_TIMEOUT, RELEASE]


def sdk_version() -> str:
    from azure.servicebus import __version__

    return str(__version__)


def verified(version: str | None = None) -> bool:
    return (version or sdk_version()).startswith(VERIFIED)


def install() -> list[str]:
    """Install every patch once, if the installed SDK is a verified one; returns the names of those active."""
    global _active
    if _active is not None:
        return list(_active)
    if not verified():
        _active = []
        return []
    from sbworker.patches import amqp_decoding, amqp_io

    _active = [*amqp_decoding.install(), *amqp_io.install(), BUFFERED, SETTLED, SOCKET_TIMEOUT, RELEASE]
    return list(_active)


def active() -> list[str]:
    """The patches in force in this process (none until `install`)."""
    return list(_active or [])


def log_state() -> None:
    """The service's start-up line: which patches are active; a WARNING when any is not (a fix is switched off)."""
    names = install()
    version = sdk_version()
    missing = [name for name in expected() if name not in names]
    if not missing:
        log.info("%s %s: SDK patches active: %s", SDK, version, ", ".join(names))
    elif not names:
        log.warning("%s %s is not a version sbworker.patches was verified with (%s): no SDK patch is active, so "
                    "settlement is slower and a message with an AMQP char or decimal property stops the receiver",
                    SDK, version, ", ".join(v + "x" for v in VERIFIED))
    else:
        log.warning("%s %s: SDK patches active: %s; NOT active (the SDK no longer has what they change): %s", SDK,
                    version, ", ".join(names), ", ".join(missing))


def receiver_options() -> dict[str, Any]:
    """Keyword arguments for the listener's receivers (the SDK's defaults on an unverified version)."""
    return {"socket_timeout": RECEIVER_SOCKET_TIMEOUT} if SOCKET_TIMEOUT in active() else {}


def buffered(receiver: Any) -> int:
    """Messages waiting in the receiver's prefetch buffer; 0 when not verified (the caller then asks for one)."""
    if BUFFERED not in active():
        return 0
    queue = getattr(getattr(receiver, "_handler", None), "_received_messages", None)
    qsize = getattr(queue, "qsize", None)
    return int(qsize()) if callable(qsize) else 0


def settled(message: Any) -> bool:
    """Whether the SDK has settled `message`; False when not verified (its holder releases it explicitly)."""
    return SETTLED in active() and bool(getattr(message, "_settled", False))


def release(receiver: Any, message: Any) -> bool:
    """Give a peek-locked message back without counting a delivery (sync receiver); False when not verified (the
    caller then abandons it, which the broker counts)."""
    if not verified():  # a call, not a change: nothing to install, only the version to trust
        return False
    receiver._handler.settle_messages(message._delivery_id, message._delivery_tag, "released")
    message._settled = True
    return True
