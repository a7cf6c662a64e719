"""Every place we change or read another SDK's private code, behind one version gate.

azure-servicebus 7.x keeps its AMQP stack private (`azure.servicebus._pyamqp`), and three of our fixes need it:
- `amqp_decoding`: decoders for the AMQP types its table lacks, and a decode that reports an undecodable section
  instead of raising inside the link (one odd message otherwise stops the receiver);
- `amqp_types`: a received message keeps the encoding of each application property, and a copy (a re-enqueued
  early approval, a resubmitted dead letter) sends it unchanged (the SDK sends every int as a 32-bit AMQP int, so
  a long or a timestamp could not be copied at all, and every other type but string, bool and double changed);
- `amqp_io`: settlement writes that do not wait behind idle reads, and outcome waits that do not queue for a read
  (together 20 of the 21 ms from receipt to settlement); frame reads bounded without a task per frame;
- `open_poll`: receivers and senders, aio and sync, open as fast as the broker answers (their open loops paused
  50 ms per step: session mode opens one receiver per session, each command-line call a sender or receiver);
- `keepalive_wake`: closing a client ends its keep-alive loop at once (it slept a second at a time, and every close
  of a receiver, sender or client waited for that sleep to end);
- `session_peek`: a peek of a session-enabled entity that opens no receive link (Service Bus allows the peek,
  the SDK's receive link is refused there), for the dashboard's queue pages;
- two reads of private state: how many messages the receiver has prefetched (`buffered`, so a receive call asks
  only for what is there), and whether a message is already settled (`settled`, so the lock keeper lets it go);
  plus a 20 ms socket timeout for the receiver (`receiver_options`), which shortens how long a settlement waits
  for the one lock the SDK shares between reads and writes;
- `release`: hands a received message back with AMQP `released`, which Service Bus does not count as a delivery
  (the SDK does the same to its unread buffer on close, but offers no call for a message it handed out). Acting
  on one dead letter means receiving those ahead of it; they go back untouched.
- `settle_batch`: completions asked for while a batch of them is on its way go out as one disposition frame per
  run of consecutive delivery ids, with one wait for all their outcomes (`settlement_batch`);
- `PROPERTIES_TRUTH`: the truth of a message's AMQP properties and header without building their list of keys.
  The SDK's `DictMixin` has only `__len__`, which lists every public attribute, and each read of a received
  message's id, subject or content type first asks whether it has properties: four such lists per message.

durabletask 1.12's clients only walk every page of DTS's query API; `dts_query` sends one page's request through
the client's own stub with the SDK's private request builders (the dashboard's and `sbworker list`'s pages). Its
async client can skip building a span per call (`emit_trace_spans`), but durabletask-azuremanaged's subclass does
not pass that argument on: `without_trace_spans` sets what the base class reads (`DTS_SPANS`).

Each SDK's patches were read against, and measured with, the versions in VERIFIED. On any other version nothing
of that SDK is installed and nothing private is read: it keeps its own behaviour (correct; slower, and without the
decoding fix), the service's start-up line says so in a WARNING, and /readyz lists what is active.
tests/integration/test_amqp_io.py and tests/dashboard/test_paging.py fail on an unverified version, so an upgrade
cannot skip the re-check.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sbworker.patches.settle_batch import SettlementBatch

log = logging.getLogger(__name__)

SERVICEBUS = "azure-servicebus"
DURABLETASK = "durabletask"
# Each SDK, and the version prefixes whose private code its patches here were read against.
VERIFIED: dict[str, tuple[str, ...]] = {SERVICEBUS: ("7.15.",), DURABLETASK: ("1.12.",)}
# What an SDK loses without its patches (the start-up WARNING says it).
_WITHOUT = {SERVICEBUS: "settlement is slower, a message with an AMQP char or decimal property stops the receiver, and "
                        "a copy (re-enqueue, resubmit) changes property types; one with an integer past 32 bits "
                        "cannot be copied at all (UncopyableProperties)",
            DURABLETASK: "lists read every instance that matches instead of one page"}

BUFFERED = "receiver.buffered"
SETTLED = "message.settled"
SOCKET_TIMEOUT = "receiver.socket_timeout"
RELEASE = "message.release"
PROPERTIES_TRUTH = "message.properties_truth"
DTS_SPANS = "client.without_trace_spans"
# The SDK settles a message only between two socket reads of the receive call in progress; its default read
# timeout (0.2 s) therefore added 100-200 ms to every settlement while we wait for new messages. 20 ms keeps
# that wait short for about 3% of a core when idle (measured against localbus).
RECEIVER_SOCKET_TIMEOUT = 0.02

# SDK -> its patches in force, once `install` has looked at that SDK.
_installed: dict[str, list[str]] = {}


def expected(sdk: str | None = None) -> list[str]:
    """Every patch this module knows (of one SDK, or of all), in the order `install` reports them."""
    from sbworker.patches import (
        amqp_decoding,
        amqp_io,
        amqp_types,
        dts_query,
        keepalive_wake,
        open_poll,
        session_peek,
        settle_batch,
    )

    known = {SERVICEBUS: [amqp_decoding.MISSING_TYPES, amqp_decoding.TOLERANT, amqp_types.TYPED_PROPERTIES,
                          amqp_io.WRITE_LOCK, amqp_io.READ_IN_CALLER, amqp_io.OUTCOME_WAIT, BUFFERED, SETTLED,
                          SOCKET_TIMEOUT, RELEASE, settle_batch.BATCHED_SETTLEMENT, open_poll.OPEN_POLL,
                          session_peek.PEEK_WITHOUT_LINK, PROPERTIES_TRUTH, keepalive_wake.KEEPALIVE_WAKE],
             DURABLETASK: [dts_query.QUERY_PAGE, DTS_SPANS]}
    return [name for each, names in known.items() if sdk in (None, each) for name in names]


def sdk_version(sdk: str) -> str:
    from importlib.metadata import version

    return version(sdk)


def verified(sdk: str, version: str | None = None) -> bool:
    """Whether `version` (default: the installed one) of `sdk` is one its patches were read against."""
    return (version or sdk_version(sdk)).startswith(VERIFIED[sdk])


def install(sdk: str | None = None) -> list[str]:
    """Install the patches of `sdk` (default: of every SDK) once, if its installed version is a verified one;
    returns those active (of `sdk`, or all). One SDK at a time: a DTS client does not import azure-servicebus to
    patch it, nor a Service Bus client durabletask and gRPC (about 0.1 s each for a command that needs one)."""
    for each in VERIFIED:
        if sdk in (None, each) and each not in _installed:
            _installed[each] = (_install_servicebus() if each == SERVICEBUS else _install_durabletask()
                                ) if verified(each) else []
    return active(sdk)


def _install_servicebus() -> list[str]:
    from sbworker.patches import (
        amqp_decoding,
        amqp_io,
        amqp_types,
        keepalive_wake,
        open_poll,
        session_peek,
        settle_batch,
    )

    active = [*amqp_decoding.install(), *amqp_types.install(), *amqp_io.install(), BUFFERED, SETTLED, SOCKET_TIMEOUT,
              RELEASE]
    if settle_batch.available():
        active.append(settle_batch.BATCHED_SETTLEMENT)
    return [*active, *open_poll.install(), *session_peek.available(), *_properties_truth(), *keepalive_wake.install()]


def _install_durabletask() -> list[str]:
    from durabletask.client import AsyncTaskHubGrpcClient

    from sbworker.patches import dts_query

    active = dts_query.install()
    if isinstance(getattr(AsyncTaskHubGrpcClient, "emit_trace_spans", None), property):
        active.append(DTS_SPANS)
    return active


def _properties_truth() -> list[str]:
    """Give the SDK's DictMixin a `__bool__` with `__len__`'s answer (any public attribute); [PROPERTIES_TRUTH]
    once installed. 1.5 -> 0.2 us per test (timeit, 2026-12-06), four tests per message received."""
    from azure.servicebus.amqp._amqp_message import DictMixin

    if "__bool__" in vars(DictMixin) and vars(DictMixin)["__bool__"] is not any_public_attribute:
        return []  # the SDK has its own now
    if not all(name in vars(DictMixin) for name in ("__len__", "keys")):
        return []
    DictMixin.__bool__ = any_public_attribute  # type: ignore[attr-defined]
    return [PROPERTIES_TRUTH]


def any_public_attribute(self: Any) -> bool:
    """What `len(self.keys()) > 0` says of a DictMixin, stopping at the first public attribute (a loop: any() over
    a generator costs five times as much here)."""
    for name in self.__dict__:  # noqa: SIM110
        if not name.startswith("_"):
            return True
    return False


def active(sdk: str | None = None) -> list[str]:
    """The patches in force in this process (none until `install`): of `sdk`, or of every SDK in VERIFIED's order."""
    return [name for each in VERIFIED if sdk in (None, each) for name in _installed.get(each, [])]


def log_state() -> None:
    """The service's start-up line: which patches are active; a WARNING per SDK when any is not (a fix is off)."""
    names = install()
    missing = [name for name in expected() if name not in names]
    versions = {sdk: sdk_version(sdk) for sdk in VERIFIED}
    if not missing:
        log.info("SDK patches active: %s", "; ".join(f"{sdk} {versions[sdk]}: {', '.join(expected(sdk))}"
                                                      for sdk in VERIFIED))
        return
    for sdk in VERIFIED:
        ours = expected(sdk)
        on = [name for name in ours if name in names]
        if len(on) == len(ours):
            log.info("%s %s: SDK patches active: %s", sdk, versions[sdk], ", ".join(on))
        elif not on:
            log.warning("%s %s is not a version sbworker.patches was verified with (%s): no patch of it is active, "
                        "so %s", sdk, versions[sdk], ", ".join(v + "x" for v in VERIFIED[sdk]), _WITHOUT[sdk])
        else:
            log.warning("%s %s: SDK patches active: %s; NOT active (the SDK no longer has what they change): %s",
                        sdk, versions[sdk], ", ".join(on), ", ".join(n for n in ours if n not in on))


def properties_as_sent(properties: Mapping[Any, Any] | None) -> dict[bytes, Any] | None:
    """A received message's application properties for a copy, each sent exactly as it arrived
    (sbworker/patches/amqp_types.py); None when that patch is not active (the caller then copies the decoded
    values, which the SDK sends with its default types)."""
    from sbworker.patches import amqp_types

    return amqp_types.as_sent(properties) if amqp_types.TYPED_PROPERTIES in active() else None


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
    if RELEASE not in active():  # a call, not a change: nothing to install, only the version to trust
        return False
    receiver._handler.settle_messages(message._delivery_id, message._delivery_tag, "released")
    message._settled = True
    return True


def settlement_batch(receiver: Any) -> SettlementBatch | None:
    """Batched completions for `receiver` (sbworker/patches/settle_batch.py); None when not verified (the caller
    then completes each message with the SDK's own `complete_message`)."""
    from sbworker.patches.settle_batch import BATCHED_SETTLEMENT, SettlementBatch

    return SettlementBatch(receiver) if BATCHED_SETTLEMENT in active() else None


def without_trace_spans(client: Any) -> None:
    """Make an async DTS client skip its spans (nothing would record them); when not verified it keeps building
    them, as the SDK does by default."""
    if DTS_SPANS in active():
        client._emit_trace_spans = False


async def open_for_peek(receiver: Any) -> None:
    """Make a plain receiver able to peek a session-enabled entity (sbworker.patches.session_peek); raises
    NotImplementedError naming the SDK version when the patch is not active (the SDK alone cannot)."""
    from sbworker.patches import session_peek

    if session_peek.PEEK_WITHOUT_LINK not in install():
        raise NotImplementedError(f"peeking a session-enabled entity needs {SERVICEBUS} {VERIFIED[SERVICEBUS][0]}x "
                                  f"(found {sdk_version(SERVICEBUS)}): the SDK alone opens a receive link, which such "
                                  "an entity refuses")
    await session_peek.open_for_peek(receiver)
