"""A web dashboard for the DTS task hub and the Service Bus queue the configuration points at (`sbworker
dashboard`, and `sbworker dev` on port 8082). See README.md#dashboard.
"""

from sbworker.dashboard.server import Dashboard, serve

__all__ = ["Dashboard", "serve"]
