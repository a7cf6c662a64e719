"""Reading orchestration state for people: `sbworker status`, `list` and `watch`."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from durabletask.client import OrchestrationQuery, OrchestrationState, OrchestrationStatus, TaskHubGrpcClient

from sbworker.core.codes import TERMINAL_STATUSES
from sbworker.core.text import clip
from sbworker.core.times import utc_text
from sbworker.patches import dts_query

STATUS_NAMES = {s.name.lower(): s for s in OrchestrationStatus}
LIST_PAGE = 500


def parse_json(raw: str | None) -> Any:
    """A payload DTS keeps as JSON text, as a value; text that is not JSON stays text."""
    if raw is None or raw == "":
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def as_dict(state: OrchestrationState) -> dict[str, Any]:
    failure = state.failure_details
    return {
        "instance_id": state.instance_id,
        "name": state.name,
        "runtime_status": state.runtime_status.name,
        "custom_status": parse_json(state.serialized_custom_status),
        "input": parse_json(state.serialized_input),
        "output": parse_json(state.serialized_output),
        "failure": None if failure is None else {"type": failure.error_type, "message": failure.message},
        "created_at": _iso(state.created_at),
        "last_updated_at": _iso(state.last_updated_at),
    }


def _iso(moment: datetime | None) -> str | None:
    return utc_text(moment) if moment else None


def render(state: OrchestrationState) -> str:
    d = as_dict(state)
    lines = [
        f"instance:      {d['instance_id']}",
        f"orchestration: {d['name']}",
        f"status:        {d['runtime_status']}",
        f"custom status: {json.dumps(d['custom_status'])}",
        f"input:         {json.dumps(d['input'])}",
        f"output:        {json.dumps(d['output'])}",
        f"created:       {d['created_at']}",
        f"updated:       {d['last_updated_at']}",
    ]
    if d["failure"]:
        lines.append(f"failure:       {d['failure']['type']}: {d['failure']['message']}")
    return "\n".join(lines)


def list_instances(client: TaskHubGrpcClient, statuses: list[OrchestrationStatus] | None, limit: int
                   ) -> list[OrchestrationState]:
    """The first `limit` instances in the backend's order (localdts: newest first), shown newest first.

    Pages of at most LIST_PAGE through the query API's continuation token: `--limit 50` reads 50 instances, not
    every instance in the task hub."""
    states: list[OrchestrationState] = []
    token: str | None = None
    while len(states) < limit:
        query = OrchestrationQuery(runtime_status=statuses or None, max_instance_count=min(limit - len(states),
                                   LIST_PAGE), fetch_inputs_and_outputs=False)
        got = dts_query.page(client, query, token)
        states += got.states
        if got.next_token is None:
            break
        token = got.next_token
    states.sort(key=lambda s: s.created_at, reverse=True)
    return states[:limit]


def render_table(states: list[OrchestrationState]) -> str:
    header = ("INSTANCE", "ORCHESTRATION", "STATUS", "CREATED", "CUSTOM STATUS")
    rows = [header] + [
        (s.instance_id, s.name, s.runtime_status.name, utc_text(s.created_at),
         clip(s.serialized_custom_status or "", 60))
        for s in states
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r[:-1])) + "  " + r[-1] for r in rows
    )


def watch(client: TaskHubGrpcClient, instance_id: str, emit: Callable[[str], None], *, interval: float = 0.5,
          appear_timeout: float = 30.0) -> OrchestrationState | None:
    """Print each status / custom-status change until the instance finishes. Polls: it holds no server stream."""
    seen: tuple[str, str | None] | None = None
    waited = 0.0
    while True:
        state = client.get_orchestration_state(instance_id)
        if state is None:
            if waited >= appear_timeout:
                return None
            if waited == 0:
                emit(f"waiting for instance {instance_id} to appear…")
        else:
            key = (state.runtime_status.name, state.serialized_custom_status)
            if key != seen:
                seen = key
                stamp = utc_text(state.last_updated_at)
                emit(f"{stamp}  {state.runtime_status.name:<10} custom status: {state.serialized_custom_status}")
            if state.runtime_status in TERMINAL_STATUSES:
                return state
        time.sleep(interval)
        waited += interval
