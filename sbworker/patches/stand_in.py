"""A copy of a standard module that differs only in `sleep`, to give one SDK module in place of the real one.

Two patches change a single sleep inside the SDK's own code (`open_poll`, `keepalive_wake`) without copying that
code: the SDK module's global `asyncio` or `time` is replaced by such a copy. Every other name is the module's
own, looked up as fast as before (no `__getattr__` on paths the SDK takes per message).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any


def with_sleep(real: ModuleType, sleep: Any) -> ModuleType:
    copy = ModuleType(real.__name__, real.__doc__)
    copy.__dict__.update({name: value for name, value in vars(real).items() if not name.startswith("__")})
    copy.sleep = sleep  # type: ignore[attr-defined]
    return copy
