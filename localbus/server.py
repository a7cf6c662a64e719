"""The I/O loop and the embeddable :class:`LocalBus`.

One thread owns every socket, proton transport and the broker. Each loop iteration reads what is readable,
lets proton turn bytes into events, runs the broker, commits the store once, and only then writes replies: so an
acknowledged send is durable, and a burst of work shares one commit. Sockets are non-blocking and reads are
bounded per iteration, so a slow or stuck client costs others at most one iteration's worth of its work.
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from proton import Collector, Connection, Transport

from .amqp import INCOMING_CREDIT, ConnectionHandler, ServerContext
from .auth import LOCAL_HOSTS, TokenAuthority
from .broker import HOT_MESSAGES, Broker
from .config import DEFAULT_CONFIG_PATH, QueueSettings, load_config, queue_settings
from .deliveryids import DeliveryIdRewriter
from .routing import RoutingWorker
from .store import MIN_FREE_BYTES, Persistence, SqlitePersistence, StorageError
from .topics import TopicSpec, load_topics, parse_topic

log = logging.getLogger("localbus.server")
logging.getLogger("proton").setLevel(logging.CRITICAL)  # abrupt SDK disconnects make proton chatty

T = TypeVar("T")
READ_CHUNK = 256 * 1024
WRITE_CHUNK = 1024 * 1024
DEFAULT_KEY_NAME = "RootManageSharedAccessKey"
DEFAULT_SAS_KEY = "SAS_KEY_VALUE"
# Service Bus advertises idle-time-out 120000 ms in its Open. AMQP 1.0 (2.4.5) advertises half the real threshold,
# so a connection silent for twice this is closed (amqp:resource-limit-exceeded); clients heartbeat well before.
IDLE_TIMEOUT = 120.0
# A client gets this long to finish SASL and Open; slow or stalled handshakes (slowloris) are dropped.
HANDSHAKE_TIMEOUT = 10.0
# After we close a connection over abuse, how long the client has to answer before its socket is dropped.
CLOSE_GRACE = 2.0
# While the store cannot write, how often to reopen it and try again.
RECOVERY_INTERVAL = 1.0


def connection_string(port: int, key_name: str = DEFAULT_KEY_NAME, key: str = DEFAULT_SAS_KEY) -> str:
    """The official emulator's connection string (port omitted when it is the AMQP default 5672)."""
    host = "localhost" if port == 5672 else f"localhost:{port}"
    return (f"Endpoint=sb://{host};SharedAccessKeyName={key_name};SharedAccessKey={key};"
            "UseDevelopmentEmulator=true;")


class _Conn:
    """A client socket with its proton transport, connection and event collector."""

    def __init__(self, sock: socket.socket, ctx: ServerContext, idle_timeout: float) -> None:
        self.sock = sock
        self.accepted = time.monotonic()
        self.drop_at: float | None = None
        self.connection = Connection()
        self.collector = Collector()
        self.connection.collect(self.collector)
        self.transport = Transport(Transport.SERVER)
        if idle_timeout > 0:
            self.transport.idle_timeout = 2 * idle_timeout  # proton advertises half, and closes silent peers
        self.transport.require_auth(True)  # a client that skips SASL is refused (Service Bus requires it too)
        sasl = self.transport.sasl()
        sasl.allowed_mechs("ANONYMOUS")
        self.transport.bind(self.connection)
        self.handler = ConnectionHandler(ctx)
        self.sent = 0  # bytes of output written to the socket so far
        self.handler.output_position = lambda: self.sent + max(self.transport.pending(), 0)
        self.ids = DeliveryIdRewriter()
        self.inbound = bytearray()  # bytes read and renumbered that proton had no room for yet
        self.eof = False
        self.events = 0
        self.mask = selectors.EVENT_READ


class Server:
    """The event loop; :meth:`run` executes on the server thread until :meth:`stop`."""

    def __init__(self, ctx: ServerContext, listener: socket.socket, idle_timeout: float = IDLE_TIMEOUT,
                 handshake_timeout: float = HANDSHAKE_TIMEOUT) -> None:
        self.ctx = ctx
        self.idle_timeout = idle_timeout
        self.handshake_timeout = handshake_timeout
        self.broker = ctx.broker
        self.listener = listener
        self.conns: dict[int, _Conn] = {}
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._calls: collections.deque[tuple[Callable[[], Any], Future[Any]]] = collections.deque()
        self._waiters: list[tuple[Callable[[], bool], Future[bool]]] = []
        self._stopping = False
        self._tokens_checked = 0.0
        self._recovery_tried = 0.0
        self.broker.worker = RoutingWorker(self._post)

    # --- cross-thread API ----------------------------------------------------------------------------------

    def call(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn`` on the server thread (the only thread allowed to touch the broker)."""
        future: Future[T] = Future()
        self._calls.append((fn, future))
        self.wakeup()
        return future

    def _post(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the server thread, logging what it raises (for threads that do not wait for it)."""
        def logged() -> None:
            try:
                fn()
            except Exception:
                log.exception("a callback on the server thread failed")
        self.call(logged)

    def when(self, predicate: Callable[[], bool]) -> Future[bool]:
        """A future that completes once ``predicate()`` (evaluated on the server thread) is true."""
        future: Future[bool] = Future()

        def register() -> None:
            self._waiters.append((predicate, future))
        self.call(register)
        return future

    def wakeup(self) -> None:
        with contextlib.suppress(OSError):  # a wakeup is already pending, or we are shutting down
            self._wake_w.send(b"x")

    def stop(self) -> None:
        self._stopping = True
        self.wakeup()

    # --- loop ----------------------------------------------------------------------------------------------

    def run(self) -> None:
        sel = self._selector
        sel.register(self.listener, selectors.EVENT_READ, None)
        sel.register(self._wake_r, selectors.EVENT_READ, None)
        try:
            while not self._stopping:
                for key, mask in sel.select(self._timeout()):
                    if key.fileobj is self.listener:
                        self._accept()
                    elif key.fileobj is self._wake_r:
                        self._drain_wakeups()
                    else:
                        conn = key.data
                        if mask & selectors.EVENT_READ:
                            self._read(conn)
                        if mask & selectors.EVENT_WRITE:
                            self._write(conn)
                self._run_calls()
                self._check_tokens()
                self._process()
                self._try_recover()
                self._flush_all()
                self._check_waiters()
        except Exception:  # pragma: no cover - a bug here must be loud, not a silent hang
            log.exception("localbus server loop crashed")
            raise
        finally:
            self._shutdown()

    def _check_tokens(self) -> None:
        """Detach links whose token expired (at most every 0.2 s: the loop wakes at least once a second), and
        refuse session receivers whose wait is over, on time (the loop wakes for the earliest, see _timeout):
        a client that asked for half a second waits half a second, as with Service Bus."""
        now = time.monotonic()
        tokens = now - self._tokens_checked >= 0.2
        if tokens:
            self._tokens_checked = now
        for conn in list(self.conns.values()):
            handler = conn.handler
            try:
                if tokens:
                    handler.check_tokens()
                if handler.next_wait_end is not None and handler.next_wait_end <= now:
                    handler.check_waiting()
            except Exception:
                log.exception("token check failed; closing the connection")
                self._abort(conn)

    def _timeout(self) -> float | None:
        if any(conn.inbound for conn in self.conns.values()):
            return 0.0  # input proton had no room for: hand it over on the next pass
        deadline = self.broker.next_deadline_ms()
        timeout = 1.0
        if deadline is not None:
            timeout = min(timeout, max(0.0, deadline / 1000.0 - time.time()))
        waits = [c.handler.next_wait_end for c in self.conns.values() if c.handler.next_wait_end is not None]
        if waits:
            timeout = min(timeout, max(0.0, min(waits) - time.monotonic()))
        return timeout

    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, _addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("accept failed: %s", exc)
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(sock, self.ctx, self.idle_timeout)
            self.conns[sock.fileno()] = conn
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _drain_wakeups(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _run_calls(self) -> None:
        while self._calls:
            fn, future = self._calls.popleft()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

    def _check_waiters(self) -> None:
        if not self._waiters:
            return
        keep = []
        for predicate, future in self._waiters:
            if future.cancelled():
                continue
            try:
                if predicate():
                    future.set_result(True)
                    continue
            except Exception as exc:
                future.set_exception(exc)
                continue
            keep.append((predicate, future))
        self._waiters = keep

    def _read(self, conn: _Conn) -> None:
        """Read a chunk once the previous one is all in proton. Reading far more than proton takes at once (8 KiB)
        lets every transfer of a chunk be judged against the credit the client had seen when it sent them: a
        client that floods its link ignoring credit is caught within one chunk, whatever our pace."""
        transport = conn.transport
        if conn.eof or transport.capacity() < 0:
            return
        if conn.inbound:
            self._push(conn)
            return
        try:
            data = conn.sock.recv(READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""  # reset by peer: same as end of stream, then drop the output too
            transport.close_head()
        if not data:
            conn.eof = True
        else:
            conn.handler.read_mark = conn.sent  # all the client could have seen of ours when it sent this
            conn.inbound += conn.ids.feed(data)
        self._push(conn)

    @staticmethod
    def _push(conn: _Conn) -> None:
        """Give proton what it has room for of the renumbered input; at end of stream, close its input."""
        transport = conn.transport
        if conn.inbound:
            capacity = transport.capacity()
            if capacity > 0:
                chunk = bytes(conn.inbound[:capacity])
                del conn.inbound[:capacity]  # cheap: a bytearray drops its head without moving the rest
                try:
                    transport.push(chunk)
                except Exception as exc:  # protocol garbage: proton has already closed the transport
                    log.info("closing connection after bad input: %s", exc)
                    conn.inbound.clear()
                    transport.close_tail()
                    transport.close_head()
                    return
        if conn.eof and not conn.inbound and transport.capacity() >= 0:
            transport.close_tail()

    def _write(self, conn: _Conn) -> None:
        transport = conn.transport
        pending = transport.pending()
        if pending <= 0:
            return
        try:
            sent = conn.sock.send(transport.peek(min(pending, WRITE_CHUNK)) or b"")
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            transport.close_head()
            transport.close_tail()
            return
        transport.pop(sent)
        conn.sent += sent

    def _process(self) -> None:
        broker = self.broker
        failed_before = broker.persistence.failure is not None  # then entity links are refused: nothing writes
        for _ in range(16):
            busy = False
            for conn in list(self.conns.values()):
                busy = self._events(conn) or busy
            broker.run_timers()  # guards each timer itself
            if broker.busy:
                try:
                    broker.pump()
                except StorageError:
                    pass  # handled below, with the whole batch
                except Exception:  # a delivery that cannot be handed out must not stop every other client
                    log.exception("handing out messages failed; continuing")
                busy = True
            if not busy or broker.persistence.failure is not None:
                break
        if broker.persistence.failure is None:
            with contextlib.suppress(StorageError):  # recorded as persistence.failure
                broker.persistence.commit()
        if broker.persistence.failure is not None and not failed_before:
            self._storage_failed()

    def _storage_failed(self) -> None:
        """A write failed, so nothing of this iteration is durable: answer none of it. Every connection is dropped
        before its output is written (the answers of this batch are in it), memory is cleared, and every entity
        link is refused with the store's error until a write succeeds again; then the store is reloaded, as
        after a restart. Acknowledged messages were committed earlier, so none is lost."""
        failure = self.broker.persistence.failure
        log.error("localbus: %s; dropping every connection unanswered and refusing work until a write succeeds",
                  failure)
        for fd, conn in list(self.conns.items()):
            self._close(fd, conn)
        self.broker.reset()
        self._recovery_tried = time.monotonic()

    def _try_recover(self) -> None:
        """While the store is failed: once a second, reopen it and try a write; on success, reload from it."""
        if self.broker.persistence.failure is None or time.monotonic() - self._recovery_tried < RECOVERY_INTERVAL:
            return
        self._recovery_tried = time.monotonic()
        if self.broker.persistence.recover():
            self.broker.reload()
            log.warning("localbus: the message store is writable again; serving again")

    def _events(self, conn: _Conn) -> bool:
        collector = conn.collector
        handled = False
        while True:
            event = collector.peek()
            if event is None:
                return handled
            handled = True
            try:
                conn.handler.dispatch(event)
            except Exception:
                log.exception("error handling %s; closing the connection", event.type)
                self._abort(conn)
            collector.pop()

    @staticmethod
    def _abort(conn: _Conn) -> None:
        conn.handler.cleanup()
        try:
            conn.transport.close_tail()
            conn.transport.close_head()
        except Exception:  # pragma: no cover - best effort on a broken connection
            pass

    def _flush_all(self) -> None:
        now = time.time()
        mono = time.monotonic()
        for fd, conn in list(self.conns.items()):
            transport = conn.transport
            if conn.inbound:
                self._push(conn)
            self._enforce_deadlines(conn, mono)
            try:
                transport.tick(now)
            except Exception:
                self._abort(conn)
            if transport.pending() > 0:
                self._write(conn)
            if transport.closed:
                self._events(conn)
                self._close(fd, conn)
                continue
            capacity, pending = transport.capacity(), transport.pending()
            if capacity < 0 and pending <= 0:  # input ended (EOF, reset or protocol error) and all output sent
                self._events(conn)
                self._close(fd, conn)
                continue
            mask = (selectors.EVENT_READ if capacity > 0 else 0) | (selectors.EVENT_WRITE if pending > 0 else 0)
            if mask != conn.mask:
                if mask:
                    self._selector.modify(conn.sock, mask, conn)
                else:
                    self._selector.unregister(conn.sock)
                conn.mask = mask

    def _enforce_deadlines(self, conn: _Conn, mono: float) -> None:
        """Drop connections stuck in the handshake, and those we closed that do not close in turn."""
        if conn.transport.closed:
            return
        if not conn.handler.opened and mono - conn.accepted > self.handshake_timeout:
            log.info("dropping a connection that did not finish SASL and Open within %.1f s", self.handshake_timeout)
            self._abort(conn)
        elif conn.handler.close_requested:
            if conn.drop_at is None:
                conn.drop_at = mono + CLOSE_GRACE
            elif mono > conn.drop_at:
                self._abort(conn)

    def _close(self, fd: int, conn: _Conn) -> None:
        conn.handler.cleanup()
        if conn.mask:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(conn.sock)
        conn.sock.close()
        self.conns.pop(fd, None)

    def _shutdown(self) -> None:
        worker, self.broker.worker = self.broker.worker, None
        if worker is not None:
            worker.close()
        for fd, conn in list(self.conns.items()):
            self._close(fd, conn)
        try:
            if self.broker.persistence.failure is None:
                self.broker.persistence.commit()
        except StorageError as exc:
            log.error("localbus: final commit failed: %s", exc)
        for sock in (self.listener, self._wake_r, self._wake_w):
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
            sock.close()
        self._selector.close()
        for _, future in self._waiters:
            future.cancel()
        while self._calls:
            self._calls.popleft()[1].cancel()


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or address to bind) only accepts connections from this machine."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class ExposureError(ValueError):
    """Binding would expose the broker to other machines without the operator's explicit consent."""


def check_exposure(host: str, key: str, allow_remote: bool) -> None:
    """Refuse a non-loopback bind unless allowed, and never with the publicly known emulator key."""
    if is_loopback(host):
        return
    if not allow_remote:
        raise ExposureError(f"{host} is not a loopback address; pass --allow-remote (LocalBus(allow_remote=True)) "
                            "to accept connections from other machines")
    if key == DEFAULT_SAS_KEY:
        raise ExposureError(f"refusing to listen on {host} with the well-known emulator key {DEFAULT_SAS_KEY}; "
                            "pass --key (LocalBus(key=...)) with a secret of your own")


def namespace_hosts(host: str, extra: Iterable[str] = ()) -> set[str]:
    """Host names that name this namespace in token audiences: loopback names, the bound address, and on a
    wildcard bind this machine's names. A token for any other host is for another namespace and refused."""
    names = set(LOCAL_HOSTS) | {h.lower() for h in extra}
    if host in ("", "0.0.0.0", "::"):
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    else:
        names.add(host.strip("[]").lower())
    return names


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(256)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class LocalBus:
    """A Service Bus-compatible broker in a background thread, for tests, ``sbworker dev`` and the CLI.

    ``stop()`` then ``start()`` again on the same object keeps the port; with ``data_path`` messages come back from
    disk, without it the in-memory messages survive on the object. Either way, locks do not: locked messages are
    available again after a restart, exactly like a broker restart.

    Security defaults are those of a local tool: it binds loopback; another address needs ``allow_remote=True``
    and a ``key`` other than the emulator's well-known one. SAS tokens must be signed with ``key``/``key_name``
    and name this namespace (loopback names, the bound address, ``hostnames``). Entra ID (jwt) tokens cannot be
    verified here and are refused unless ``accept_jwt=True``. ``idle_timeout`` (advertised in Open, Service
    Bus's 120 s), ``handshake_timeout`` and ``link_credit`` exist so tests can exercise the limits quickly, and
    ``auth.clock`` (epoch seconds, ``time.time`` by default) so that they can make a token lapse at a chosen step.
    ``min_free_bytes``: with ``data_path``, sends are refused while the disk has less free space than this.
    ``hot_messages``: with ``data_path``, available messages an entity keeps in memory (the rest wait on disk).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, config_path: str | Path | None = None,
                 data_path: str | Path | None = None,
                 queues: Mapping[str, QueueSettings | Mapping[str, Any]] | None = None,
                 topics: Mapping[str, Mapping[str, Any]] | None = None,
                 key: str | None = None, key_name: str = DEFAULT_KEY_NAME, *, sas_key: str | None = None,
                 accept_jwt: bool = False, hostnames: Iterable[str] = (), allow_remote: bool = False,
                 idle_timeout: float = IDLE_TIMEOUT, handshake_timeout: float = HANDSHAKE_TIMEOUT,
                 link_credit: int = INCOMING_CREDIT, min_free_bytes: int = MIN_FREE_BYTES,
                 hot_messages: int = HOT_MESSAGES) -> None:
        key = key or sas_key or DEFAULT_SAS_KEY  # sas_key: the older name of the same setting
        check_exposure(host, key, allow_remote)
        self.host = host
        self._port = port
        self.config_path = Path(config_path) if config_path is not None else (
            DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None)
        self.data_path = Path(data_path) if data_path is not None else None
        settings = dict(load_config(self.config_path)) if self.config_path is not None else {}
        for name, props in (queues or {}).items():
            settings[name] = queue_settings(props, where=f"queue {name!r}")
        self.queues: dict[str, QueueSettings] = settings
        found = dict(load_topics(self.config_path)) if self.config_path is not None else {}
        for name, raw in (topics or {}).items():  # Config.json form: {"Properties", "Subscriptions": [...]}
            found[name] = parse_topic(name, raw, where=f"topic {name!r}")
        self.topics: dict[str, TopicSpec] = found
        self.key = key
        self.key_name = key_name
        self.accept_jwt = accept_jwt
        self.idle_timeout = idle_timeout
        self.handshake_timeout = handshake_timeout
        self.link_credit = link_credit
        self.min_free_bytes = min_free_bytes
        self.hot_messages = hot_messages
        self.auth = TokenAuthority(key_name, self.key, accept_jwt=accept_jwt,
                                   hosts=namespace_hosts(host, hostnames))
        self._lock = threading.Lock()
        self._memory_broker: Broker | None = None
        self._broker: Broker | None = None
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> LocalBus:
        """Bind and serve in a daemon thread; returns self. A no-op while already running."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return self
            persistence: Persistence = (SqlitePersistence(self.data_path, min_free_bytes=self.min_free_bytes)
                                        if self.data_path else Persistence())
            try:
                listener = _bind(self.host, self._port)
            except OSError:
                persistence.close()
                raise
            self._port = int(listener.getsockname()[1])
            if self.data_path is not None:
                broker = Broker(self.queues, persistence, topics=self.topics, hot_messages=self.hot_messages)
            elif self._memory_broker is not None:
                broker = self._memory_broker
                broker.restart()
            else:
                broker = self._memory_broker = Broker(self.queues, topics=self.topics)
            self._broker = broker
            self._server = Server(ServerContext(broker, self.auth, self.link_credit), listener, self.idle_timeout,
                                  self.handshake_timeout)
            self._thread = threading.Thread(target=self._serve, name=f"localbus:{self._port}", daemon=True)
            self._thread.start()
            log.info("localbus listening on %s:%d", self.host, self._port)
            return self

    def _serve(self) -> None:
        server = self._server
        assert server is not None
        try:
            server.run()
        finally:
            if self.data_path is not None:
                server.broker.persistence.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Close every connection and the listening socket, and join the thread. Safe to call twice."""
        with self._lock:
            server, thread = self._server, self._thread
            if server is None or thread is None:
                return
            server.stop()
            thread.join(timeout)
            if thread.is_alive():  # pragma: no cover - would be a bug in the loop
                raise RuntimeError("localbus server thread did not stop")
            self._server = None
            self._thread = None

    def __enter__(self) -> LocalBus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # --- addresses -----------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (the OS-chosen one after ``start()`` when constructed with ``port=0``)."""
        return self._port

    @property
    def connection_string(self) -> str:
        return connection_string(self._port, self.key_name, self.key)

    @property
    def sas_key(self) -> str:
        """The shared access key (older name of :attr:`key`)."""
        return self.key

    @property
    def endpoint(self) -> str:
        """``localhost:PORT``, for ``ServiceBusClient(endpoint, credential, use_tls=False)``."""
        return f"localhost:{self._port}"

    # --- inspection for tests ------------------------------------------------------------------------------

    def last_token(self, audience: str) -> tuple[str, str] | None:
        """Last (token type, token) presented on ``$cbs`` for ``audience`` (a URI or an entity path)."""
        return self.auth.last_token(audience)

    @property
    def tokens(self) -> list[tuple[str, str]]:
        """All presented (token type, audience) pairs, oldest first."""
        return self.auth.tokens

    def call(self, fn: Callable[[Broker], T], timeout: float = 10.0) -> T:
        """Run ``fn(broker)`` on the server thread and return its result."""
        server, broker = self._server, self._broker
        if server is None or broker is None:
            raise RuntimeError("localbus is not running")
        return server.call(lambda: fn(broker)).result(timeout)

    def connection_count(self) -> int:
        """Open client connections (each SDK sender/receiver has its own)."""
        server = self._server
        if server is None:
            raise RuntimeError("localbus is not running")
        return server.call(lambda: len(server.conns)).result(10)

    def wait_for_connections(self, at_most: int, timeout: float = 10.0) -> None:
        """Block until at most ``at_most`` client connections are open (e.g. after killing a client)."""
        server = self._server
        if server is None:
            raise RuntimeError("localbus is not running")
        server.when(lambda: len(server.conns) <= at_most).result(timeout)

    def counts(self, queue: str) -> dict[str, int]:
        """Message counts by state (active, locked, deferred, scheduled, total) of a queue or its DLQ path."""
        return self.call(lambda b: b.counts(queue))

    def wait_for(self, predicate: Callable[[Broker], bool], timeout: float = 10.0) -> None:
        """Block until ``predicate(broker)`` holds (checked after every loop iteration); TimeoutError if not."""
        server, broker = self._server, self._broker
        if server is None or broker is None:
            raise RuntimeError("localbus is not running")
        future = server.when(lambda: predicate(broker))
        try:
            future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise TimeoutError(f"localbus condition not met within {timeout} s") from None
