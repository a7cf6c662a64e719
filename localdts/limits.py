"""What DTS refuses, localdts refuses too, with the same gRPC status and a message that names the limit.

Source: "Durable Task Scheduler", Limitations and considerations (learn.microsoft.com/azure/durable-task/
scheduler/durable-task-scheduler, 2026-05-04): orchestration instance ids are 1 to 100 characters.
"""

from __future__ import annotations

MAX_INSTANCE_ID_LENGTH = 100


def instance_id_problem(instance_id: str) -> str | None:
    """Why DTS would refuse ``instance_id`` (one line, without echoing a long id), or None if it is valid."""
    if not instance_id:
        return "an instance id cannot be empty"
    if len(instance_id) > MAX_INSTANCE_ID_LENGTH:
        return (f"instance id of {len(instance_id)} characters is longer than {MAX_INSTANCE_ID_LENGTH} characters "
                "(the Durable Task Scheduler's limit)")
    return None
