"""One message, start to end: parse (the contract) → dispatch (DTS) → decide (the settlement policy) → settle.

Each step is one call, in this order, with the message's Delivery carried along; the lock is kept by the
LockKeeper until the message is settled. A stop while the message is in hand abandons it (the grace period is
over), and a bug of ours abandons it too, with its traceback in the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from azure.servicebus import ServiceBusReceivedMessage
from azure.servicebus.aio import ServiceBusReceiver

from listener.delivery import Delivery
from listener.dispatch import Dispatcher, InstanceNotFound, Outcome, Pending
from listener.locks import LockKeeper
from listener.settlement import Abandon, Action, RetryHistory, decide, is_confirm_copy
from listener.settler import Settler, field
from orchestrations.events import CATALOG
from sbworker.core import contract, messages
from sbworker.core.codes import PROP_UNDECODABLE, AbandonReason, Reason
from sbworker.core.config import ListenerSettings
from sbworker.core.contract import InputCheck, Invalid, Request, StartRequest
from sbworker.core.events import EventCatalog
from sbworker.core.limits import DEFAULT_LIMITS, Limits
from sbworker.observability.observer import Observer

log = logging.getLogger(__name__)


class Pipeline:
    def __init__(self, *, dispatcher: Dispatcher, settler: Settler, settings: ListenerSettings, observer: Observer,
                 is_registered: Callable[[str], bool], registered_names: Callable[[], list[str]],
                 events: EventCatalog = CATALOG, bounds: Limits = DEFAULT_LIMITS,
                 input_problem: InputCheck | None = None) -> None:
        self._dispatcher = dispatcher
        self._settler = settler
        self._settings = settings
        self._observer = observer
        self._is_registered = is_registered
        self._registered_names = registered_names
        self._events = events
        self._bounds = bounds  # what a message may carry into DTS (README "Limits")
        self._input_problem = input_problem

    async def handle(self, receiver: ServiceBusReceiver, renewer: LockKeeper, message: ServiceBusReceivedMessage
                     ) -> Action | None:
        """The action applied to `message`, or None if it could not be settled (it will be redelivered)."""
        delivery = Delivery(message, receiver, self._observer.message(message), message_id=message.message_id,
                            subject=messages.text(message.subject))
        renewer.hold(message)
        try:
            # The trace is current for the DTS calls (the SDK's spans become its children) and the settlement.
            with delivery.trace.current():
                try:
                    action = await self._decide(delivery)
                except asyncio.CancelledError:
                    await self._settler.settle(delivery, Abandon(AbandonReason.SHUTDOWN))
                    raise
                except Exception:
                    log.exception("unexpected error handling message %s; abandoning it", field(delivery.message_id))
                    action = Abandon(AbandonReason.UNEXPECTED_ERROR)
                return await self._settler.settle(delivery, action)
        finally:
            renewer.release(message)

    async def _decide(self, delivery: Delivery) -> Action:
        message = delivery.message
        parsed = delivery.parsed = self.parse(delivery)
        delivery.trace.request(getattr(parsed, "orchestration", None), getattr(parsed, "instance_id", None))
        if not isinstance(parsed, Invalid) and parsed.cloudevent is not None:
            delivery.trace.cloudevent(parsed.cloudevent)
        outcome: Outcome | None = None
        if not isinstance(parsed, Invalid):
            outcome = await self._dispatcher.dispatch(parsed, message_id=messages.text(delivery.message_id),
                                                      redelivered=bool(message.delivery_count),
                                                      confirm=not isinstance(parsed, StartRequest)
                                                      and is_confirm_copy(message))
        # Only an event still waiting (for its instance, or for its instance to take it) needs its retry history.
        window = self._settings.approval_not_found_window_seconds
        retries, since, uncopyable = 0, 0.0, None
        if isinstance(outcome, InstanceNotFound | Pending):
            now = datetime.now(UTC)
            history = RetryHistory.of(message, window, now, confirm=isinstance(outcome, Pending))
            retries, since = history.retries, history.seconds_since_first(now)
            uncopyable = messages.uncopyable(messages.properties(message))
        return decide(parsed, outcome, retries_so_far=retries, seconds_since_first_attempt=since,
                      not_found_window=window, message_id_length=len(str(delivery.message_id or "")),
                      uncopyable=uncopyable)

    def parse(self, delivery: Delivery) -> Request | Invalid:
        message = delivery.message
        undecodable = messages.prop(message, PROP_UNDECODABLE)
        if undecodable is not None:
            return Invalid(Reason.UNDECODABLE_MESSAGE, str(undecodable))
        try:
            body = messages.body_bytes(message)
        except ValueError as error:  # an AMQP value or sequence body, from a publisher other than the SDKs
            return Invalid(Reason.UNSUPPORTED_BODY, str(error))
        return contract.parse(
            body,
            subject=delivery.subject,
            content_type=messages.text(message.content_type),
            message_id=delivery.message_id,
            is_registered=self._is_registered,
            registered_names=self._registered_names,
            max_bytes=self._settings.max_message_bytes,
            events=self._events,
            bounds=self._bounds,
            input_problem=self._input_problem,
            application_properties=message.application_properties,
            cloudevent_types=self._settings.cloudevent_types,
        )
