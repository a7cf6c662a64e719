"""`sbworker dev` (what `make run` runs): the whole system on the embedded local stack.

localbus stands in for the Service Bus emulator and localdts (a durable DTS backend) for the DTS emulator, on the
emulators' own ports, so the printed connection strings work unchanged against docker-compose later. The wiring
of the three is sbworker.localstack's; this module adds the command line's checks, the banner, the demo and the
dashboard.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from listener import service
from sbworker import localstack
from sbworker.core import config, event_loop
from sbworker.core.config import Settings
from sbworker.core.entities import default_retry_queue
from sbworker.core.errors import ConfigError, one_line
from sbworker.core.net import is_loopback
from sbworker.observability import config as observability_config
from sbworker.observability import telemetry
from sbworker.observability.config import TelemetrySettings

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path(".localdata")


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host.strip("[]"), port))
        except OSError:
            return False
    return True


def run_dev(*, servicebus_port: int, dts_port: int, data_dir: Path | None, config_path: Path,
            health_port: int | None = None, demo: bool = True, host: str = "127.0.0.1", allow_remote: bool = False,
            key: str | None = None, dashboard_port: int = 0, topic: bool = False, sessions: bool = False) -> int:
    """localbus + localdts + `sbworker run`, all on `host` (loopback unless the caller insists, with a key).

    `topic`: the topic form with the shipped Config.json's topic and subscription, unless the environment names
    others. `sessions`: session mode, on the shipped Config.json's session-enabled queue or subscription.
    """
    try:
        from localbus.server import ExposureError, check_exposure
    except ImportError:
        raise ConfigError("sbworker dev", "the local stack needs python-qpid-proton: pip install 'sbworker[local]'"
                          ) from None
    try:
        check_exposure(host, key or "SAS_KEY_VALUE", allow_remote)
    except ExposureError as error:
        raise ConfigError("--host", str(error).replace("LocalBus(allow_remote=True)", "sbworker dev").replace(
            "LocalBus(key=...)", "sbworker dev")) from None
    for name, port in (("--servicebus-port", servicebus_port), ("--dts-port", dts_port),
                       ("--dashboard-port", dashboard_port)):
        if port and not port_free(port, host):
            raise ConfigError(name, f"port {port} is in use (is an emulator or another `sbworker dev` running?)")
    if not is_loopback(host):
        print(f"warning: sbworker dev listens on {host}: anyone who reaches it can send with the key you gave, and "
              f"the DTS endpoint (port {dts_port}) has no authentication at all", file=sys.stderr, flush=True)
    environ = sessions_environment(os.environ) if sessions else os.environ
    environ = topic_environment(environ, sessions=sessions) if topic else environ
    board = None
    with localstack.backends(environ, host=host, servicebus_port=servicebus_port, dts_port=dts_port,
                             data_dir=data_dir, config_path=config_path, key=key, allow_remote=allow_remote) as parts:
        settings = dataclasses.replace(parts.settings, listener=dataclasses.replace(
            parts.settings.listener,
            health_port=parts.settings.listener.health_port if health_port is None else health_port,
            health_host=host,
        ))
        try:
            telemetry_settings = observability_config.load(environ)
            recent = _recent_spans(telemetry_settings) if dashboard_port else None
            if dashboard_port:
                # Loopback whatever --host says: `sbworker dashboard` is the one to share, with authentication.
                board = _dashboard(settings, host if is_loopback(host) else "127.0.0.1", dashboard_port, recent)
            print(_banner(settings, parts.servicebus_connection, data_dir, board.url if board else None), flush=True)
            if demo:
                threading.Thread(target=_demo, args=(settings,), name="demo", daemon=True).start()
            observed = telemetry.setup(telemetry_settings, scrape=settings.listener.health_port != 0,
                                       recent_spans=recent)
            return event_loop.run(service.serve(settings, telemetry=observed), settings.listener.event_loop)
        finally:
            if board is not None:
                board.stop()


def topic_environment(environ: Mapping[str, str], *, sessions: bool = False) -> dict[str, str]:
    """The environment with the topic form's defaults filled in (`sbworker dev --topic`), the session-enabled
    subscription's with `sessions`."""
    env = dict(environ)
    if env.get("SERVICEBUS_QUEUE", "").strip():
        raise ConfigError("SERVICEBUS_QUEUE", "is set, but --topic asks for the topic form: unset one of them")
    subscription = config.DEFAULT_SESSION_SUBSCRIPTION if sessions else config.DEFAULT_SUBSCRIPTION
    for name, default in (("SERVICEBUS_TOPIC", config.DEFAULT_TOPIC), ("SERVICEBUS_SUBSCRIPTION", subscription)):
        env[name] = env.get(name, "").strip() or default
    return env


def sessions_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """`sbworker dev --sessions`: SERVICEBUS_SESSIONS=true (the queue then defaults to the session-enabled one)."""
    env = dict(environ)
    if env.get("SERVICEBUS_SESSIONS", "").strip().lower() == "false":
        raise ConfigError("SERVICEBUS_SESSIONS", "is false, but --sessions asks for session mode: unset one of them")
    env["SERVICEBUS_SESSIONS"] = "true"
    return env


def _recent_spans(settings: TelemetrySettings) -> Any:
    """The process's spans, kept for the dashboard's waterfall (unless telemetry is switched off altogether)."""
    if not settings.enabled:
        return None
    from sbworker.observability.recent_spans import RecentSpans

    return RecentSpans()


def _dashboard(settings: Settings, host: str, port: int, spans: Any = None, **options: Any) -> Any:
    """The dashboard on its own thread (it warns itself when `host` is not loopback)."""
    try:
        from sbworker import dashboard
    except ImportError:
        raise ConfigError("--dashboard-port", "the dashboard package is not installed (use 0 to run without it)"
                          ) from None
    return dashboard.serve(settings, host=host, port=port, spans=spans, **options)


def run_dashboard(settings: Settings, *, host: str, port: int, allow_remote: bool = False, auth: str | None = None,
                  allowed_hosts: list[str] | None = None, actions: bool | None = None, action_role: str | None = None,
                  tls_cert: Path | None = None, tls_key: Path | None = None, taskhubs: list[str] | None = None) -> int:
    """`sbworker dashboard`: serve until SIGINT/SIGTERM, then exit 0. Bad access settings: ConfigError (exit 2)."""
    from sbworker.dashboard import access

    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("--tls-cert" if tls_cert is None else "--tls-key",
                          "HTTPS needs both --tls-cert and --tls-key")
    rules = access.configure(host=host, allow_remote=allow_remote, auth=auth, token=os.environ.get("DASHBOARD_TOKEN"),
                             extra_hosts=allowed_hosts or [], actions=actions, action_role=action_role)
    tls = (tls_cert, tls_key) if tls_cert is not None and tls_key is not None else None
    hubs = taskhubs or [h.strip() for h in os.environ.get("DASHBOARD_TASKHUBS", "").split(",") if h.strip()]
    hubs = [config.check_taskhub(h, "--taskhub" if taskhubs else "DASHBOARD_TASKHUBS") for h in hubs]
    board = _dashboard(settings, host, port, access=rules, tls=tls, taskhubs=hubs)
    print(f"dashboard: {board.url}  (task hub {settings.dts.taskhub!r}, {settings.servicebus.source})",
          flush=True)
    # The handlers only append to a list, looked at every 0.2 s: one that set a threading.Event waited for without
    # a timeout could deadlock on the Event's lock or be lost just before the wait, and SIGTERM went unanswered.
    received: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda number, _frame: received.append(number))
    try:
        while not received:
            time.sleep(0.2)
    finally:
        board.stop()
    return 0


def _demo(settings: Settings) -> None:
    from sbworker.operations.demo import run_demo

    lines = ["", "The five workflows, started through the queue (sbworker dev --no-demo skips this):"]
    try:
        run_demo(settings, lines.append)
    except Exception as error:  # the demo must never take the dev stack down
        lines.append(f"  demo failed: {one_line(error)}")
    print("\n".join([*lines, "", "Ready for your own messages (see the commands above)."]), flush=True)


def _exports(settings: Settings) -> str:
    """The variables the CLI in another terminal needs to publish where this stack reads: the topic form's, and
    session mode's (then each message goes in its instance's session)."""
    source = settings.servicebus.source
    names = ["SERVICEBUS_SESSIONS=true"] if source.sessions else []
    if source.topic is not None:
        names += [f"SERVICEBUS_TOPIC={source.topic}", f"SERVICEBUS_SUBSCRIPTION={source.entity.name}"]
        if source.retry_queue != default_retry_queue(source.topic, source.entity.name):
            names.append(f"SERVICEBUS_RETRY_QUEUE={source.retry_queue}")
    elif source.sessions and source.entity.name != config.DEFAULT_SESSION_QUEUE:
        names.append(f"SERVICEBUS_QUEUE={source.entity.name}")
    return f", after\n  export {' '.join(names)}" if names else ""


def _banner(settings: Settings, sb_connection: str, data_dir: Path | None, dashboard_url: str | None) -> str:
    kept = f"kept in {data_dir}/" if data_dir else "memory only: lost on exit"
    return f"""
sbworker dev: the whole system on the embedded local stack
  Service Bus (localbus):  {sb_connection}
                           {settings.servicebus.source}, messages {kept}
  DTS (localdts):          Endpoint={settings.dts.endpoint};Authentication=None
                           task hub {settings.dts.taskhub!r}, orchestrations {kept}
  Health:                  http://localhost:{settings.listener.health_port}/readyz
  Dashboard:               {dashboard_url or "off (--dashboard-port 0)"}

In another terminal (same folder){_exports(settings)}:
  .venv/bin/sbworker publish start approval_workflow --input '{{"item": "laptop", "amount": 1200}}'
  .venv/bin/sbworker watch <instance-id>
  .venv/bin/sbworker publish approve <instance-id> --approver ada
  .venv/bin/sbworker list

Press Ctrl-C to stop.
"""
