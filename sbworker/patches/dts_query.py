"""One page of DTS's query API, which durabletask's clients (1.12) do not offer: they only walk every page.

`QueryInstances` takes a page size (`maxInstanceCount`) and a continuation token and answers one page plus the
token of the next; `get_all_orchestration_states` keeps asking until the token runs out, so a list of 25 rows out
of 100,000 instances read all 100,000 (`get_all_entities` does the same with `QueryEntities`). `page`,
`page_async` and `entity_page_async` send one request, through the client's own stub (its channel, credentials,
task hub header and retry policy), with the SDK's own request builders and parsers.

Those are private to durabletask: `sbworker.patches.install` turns this on only for the versions in its VERIFIED
(the one gate), and only when the SDK still has every name it reads. Otherwise nothing private is touched: the
query walks every page with the public call (correct, slow with many instances), the service's start-up line and
/readyz say it is off, and the first such list logs a WARNING. tests/dashboard/test_paging.py fails when a page
stops being one request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from durabletask.client import (
    AsyncTaskHubGrpcClient,
    EntityQuery,
    OrchestrationQuery,
    OrchestrationState,
    TaskHubGrpcClient,
)
from durabletask.entities.entity_metadata import EntityMetadata

log = logging.getLogger(__name__)

QUERY_PAGE = "dts_query.page"

_installed = False
_warned = False


@dataclass(frozen=True)
class EntityPage:
    entities: list[EntityMetadata]
    next_token: str | None


@dataclass(frozen=True)
class StatePage:
    states: list[OrchestrationState]
    next_token: str | None  # None: this was the last page
    complete: bool = True  # False when the SDK could not be asked for one page (see `install`)


def install() -> list[str]:
    """Read one page at a time from now on, if the SDK still has what that reads; returns the name if so.

    Called once, by `sbworker.patches.install`, and only on a verified durabletask version.
    """
    global _installed
    from durabletask import client
    from durabletask.internal import client_helpers, helpers

    needed = [(client_helpers, "build_query_instances_req"), (client_helpers, "build_query_entities_req"),
              (helpers, "get_string_value"), (client, "parse_orchestration_state"),
              (client.AsyncTaskHubGrpcClient, "_get_stub")]
    _installed = all(callable(getattr(owner, name, None)) for owner, name in needed)
    return [QUERY_PAGE] if _installed else []


def _request(query: OrchestrationQuery, token: str | None) -> Any:
    from durabletask.internal.client_helpers import build_query_instances_req
    from durabletask.internal.helpers import get_string_value

    return build_query_instances_req(query, get_string_value(token))


def _states(client: Any, response: Any) -> StatePage:
    from durabletask.client import parse_orchestration_state

    states = [parse_orchestration_state(r, client._data_converter) for r in response.orchestrationState]
    token = response.continuationToken.value if response.HasField("continuationToken") else ""
    return StatePage(states, token if token and token != "0" else None)


def page(client: TaskHubGrpcClient, query: OrchestrationQuery, token: str | None = None) -> StatePage:
    """Up to `query.max_instance_count` states after `token` (None: from the start)."""
    if not _installed:
        return _everything(client.get_all_orchestration_states(query), query)
    response = client._stub.QueryInstances(_request(query, token))
    if client._payload_store is not None:  # payloads kept in a store (DTS_PAYLOAD_STORAGE), as the SDK reads them
        from durabletask.payload import helpers

        helpers.deexternalize_payloads(response, client._payload_store)
    return _states(client, response)


async def page_async(client: AsyncTaskHubGrpcClient, query: OrchestrationQuery, token: str | None = None
                     ) -> StatePage:
    if not _installed:
        return _everything(await client.get_all_orchestration_states(query), query)
    response = await client._get_stub().QueryInstances(_request(query, token))
    if client._payload_store is not None:
        from durabletask.payload import helpers

        await helpers.deexternalize_payloads_async(response, client._payload_store)
    return _states(client, response)


def _everything(states: list[OrchestrationState], query: OrchestrationQuery) -> StatePage:
    """The public call's answer (every page), cut to one page; there is no token to go on from."""
    global _warned
    if not _warned:
        _warned = True
        log.warning("sbworker.patches.dts_query is not active (see the start-up line): lists read every instance "
                    "that matches instead of one page")
    size = query.max_instance_count or len(states)
    return StatePage(states[:size], None, complete=len(states) <= size)


async def entity_page_async(client: AsyncTaskHubGrpcClient, query: EntityQuery, token: str | None = None
                            ) -> EntityPage:
    """One page of `QueryEntities` (`query.page_size` entities after `token`), as `page_async` is for instances."""
    if not _installed:
        entities = await client.get_all_entities(query)
        return EntityPage(entities[:query.page_size or len(entities)], None)
    from durabletask.internal.client_helpers import build_query_entities_req
    from durabletask.internal.helpers import get_string_value

    request = build_query_entities_req(query, get_string_value(token))
    response = await client._get_stub().QueryEntities(request)
    if client._payload_store is not None:
        from durabletask.payload import helpers

        await helpers.deexternalize_payloads_async(response, client._payload_store)
    entities = [EntityMetadata.from_entity_metadata(e, query.include_state, client._data_converter)
                for e in response.entities]
    next_token = response.continuationToken.value if response.HasField("continuationToken") else ""
    return EntityPage(entities, next_token or None)
