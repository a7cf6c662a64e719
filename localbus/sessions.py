"""Message sessions, as Service Bus keeps them (see docs/servicebus-sessions.md for the wire facts).

On an entity with ``RequiresSession``, every message belongs to the session its ``group-id`` names, and a session
is a sub-queue of its own: its messages go, in sequence order, only to the one receiver that holds its lock. The
lock is an umbrella for its messages' locks: they last as long as it does. It is released when that receiver's
link closes (its locked messages become available again, delivery count unchanged) or when it expires (their
delivery count goes up by one, and the link is detached with ``session-lock-lost``). A session's state is an
opaque binary kept, across restarts, until it is set to null.
"""

from __future__ import annotations

import heapq
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from .codec import StoredMessage
from .properties import InvalidProperty

# The broker's Entity: broker.py imports this module, so this one names the type only as a parameter.
EntityT = TypeVar("EntityT")

SESSION_CANNOT_BE_LOCKED = "com.microsoft:session-cannot-be-locked"
SESSION_LOCK_LOST = "com.microsoft:session-lock-lost"
TIMEOUT = "com.microsoft:timeout"
# Service Bus quotas: "Maximum size of a message session ID: 128"; session state holds "the size of one message".
MAX_SESSION_ID_LENGTH = 128
MAX_SESSION_STATE_BYTES = 256 * 1024
# Dead-letter reason and description Service Bus gives a message without a session id that a topic routes to a
# subscription requiring sessions.
NO_SESSION_REASON = "Session id is null."
NO_SESSION_DESCRIPTION = "Session enabled entity doesn't allow a message whose session identifier is null."


class SessionCannotBeLocked(Exception):
    """The named session is locked by another receiver."""


class SessionLockLost(Exception):
    """The session is not (or no longer) locked by the one asking."""


class SessionRequired(Exception):
    """A message without a session id sent to an entity that requires sessions (refused, as Service Bus does)."""


class InvalidSessionId(InvalidProperty):
    """A session id longer than Service Bus allows."""


def check_session_ids(entity: str, messages: Sequence[StoredMessage], required: bool) -> None:
    """Refuse a send (all of it) that Service Bus would refuse for its session ids."""
    for msg in messages:
        if msg.session_id is not None and len(msg.session_id) > MAX_SESSION_ID_LENGTH:
            raise InvalidSessionId(f"The session id is {len(msg.session_id)} characters long; Service Bus allows at "
                                   f"most {MAX_SESSION_ID_LENGTH}.")
        if required and msg.session_id is None:
            raise SessionRequired(f"The SessionId was not set on a message, and it cannot be sent to the entity "
                                  f"'{entity}'. Entities that have session support enabled can only receive messages "
                                  "that have the SessionId set to a valid value.")


class Holder(Protocol):
    """The receiving link that holds a session's lock (a broker ``Consumer`` that can lose its session)."""

    peek_lock: bool

    @property
    def client(self) -> object:
        """The connection it is on: a session is managed (renewed, its state set) only from there."""

    def credit(self) -> int: ...

    def push(self, record: Any, token: uuid.UUID | None, wire: bytes) -> None: ...

    def idle(self) -> None: ...

    def session_lost(self, description: str) -> None: ...


@dataclass(eq=False)
class Session(Generic[EntityT]):
    """One session of one entity: its available messages (a heap of sequence numbers), its lock, its state."""

    entity: EntityT
    session_id: str
    ready: list[int] = field(default_factory=list)
    holder: Holder | None = None
    locked_until_ms: int = 0
    generation: int = 0  # bumped at every accept and release, so an old expiry timer finds nothing to do
    state: bytes | None = None
    locked: set[int] = field(default_factory=set)  # sequence numbers its holder has locked
    messages: int = 0  # records of the entity in this session (any state)

    def push(self, seq: int) -> None:
        heapq.heappush(self.ready, seq)

    def held_by(self, client: object) -> bool:
        return self.holder is not None and self.holder.client is client
