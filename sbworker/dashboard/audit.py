"""One structured line per action anyone takes through the dashboard: who, what, on which instances or messages,
and what came of it. Logged at INFO on `sbworker.dashboard.audit` as `audit {json}`, whatever the outcome (done,
partly done, failed, refused), so a log search for `audit ` answers "who terminated this?".
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from aiohttp import web

from sbworker.core.text import clip
from sbworker.core.times import utc_text
from sbworker.dashboard import access

log = logging.getLogger("sbworker.dashboard.audit")

OK, PARTLY, FAILED, REFUSED = "ok", "partly", "failed", "refused"
MAX_DETAIL = 500


def record(request: web.Request, action: str, result: str, *, instances: Iterable[str] = (),
           messages: Iterable[int] = (), entity: str | None = None, detail: str = "",
           outcomes: Mapping[str, str] | None = None) -> None:
    identity = request.get(access.IDENTITY)
    line: dict[str, object] = {
        "at": utc_text(datetime.now(UTC)),
        "who": identity.name if identity else "anonymous",
        "via": identity.method if identity else "none",
        "from": access.remote_address(request.app[access.ACCESS], request),
        "action": action,
        "result": result,
    }
    ids = [clip(i, 200) for i in instances]
    if ids:
        line["instances"] = ids
    numbers = list(messages)
    if numbers:
        line["messages"] = numbers
    if entity:
        line["entity"] = entity
    if outcomes:
        line["outcomes"] = {clip(k, 200): clip(v, MAX_DETAIL) for k, v in outcomes.items()}
    if detail:
        line["detail"] = clip(detail, MAX_DETAIL)
    log.info("audit %s", json.dumps(line, ensure_ascii=False, sort_keys=False))
