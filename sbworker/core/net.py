"""Whether a host is this machine: what decides TLS (a local broker has none), `Authentication=None` (only for a
local emulator), and whether `sbworker dev` and the dashboard may bind without a warning.

localbus and localdts keep their own few lines for this: they import nothing of the product (a test checks it).
"""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """`localhost`, a name under `.localhost` (RFC 6761), or a loopback address (brackets around IPv6 allowed)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
