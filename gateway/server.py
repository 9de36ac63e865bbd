"""The asyncio TCP transport of the FIX gateway: moves bytes, applies back-pressure, ticks.

All protocol logic lives in the sans-IO gateway.fix.session.Session; this module only
    * accepts TCP connections and attaches each to the Session named by its first message
      (a Logon whose TargetCompID/SenderCompID are one of our sessions' CompIDs, so several
      acceptor CompIDs - CCERX for brokers, ISLD for the conformance session - coexist);
    * feeds received bytes to the session and writes what every session produced once per
      event-loop iteration (after all the chunks that arrived together: one store flush and
      one write per session, however many messages were routed to it);
    * ticks every session twice a second (heartbeats, test requests, logon/logout timeouts);
    * bounds memory: a partial frame is at most max_message_size bytes (else disconnect);
      when a client does not read, its transport's write buffer passes the high-water mark,
      we stop reading from it (no more work on its behalf), and past max_write_buffer we
      disconnect it (what it missed stays in the store for a ResendRequest);
    * never lets a client's bytes crash the server: anything unexpected closes that
      connection only.

Public API (stable; the exchange application and `ccerx serve` code against it):

    SessionSettings(key, application, heartbeat_interval=30, reset_on_logon=False, authenticate=None)
    server = GatewayServer(host, port, sessions, store_dir=None, max_message_size=...)
    await server.start(); server.port; await server.serve_forever(); await server.stop()
    server.deliver([(SessionKey, FixMessage), ...])      # from the event loop's thread
    conformance_session() -> SessionSettings              # ISLD/TW44 on the echo application
"""
from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ccerx.gateway.fix import codec
from ccerx.gateway.fix.application import Application, FixMessage, Outbound, SessionKey
from ccerx.gateway.fix.session import DEFAULT_HEARTBEAT_BOUNDS, LOGON_TIMEOUT, Session
from ccerx.gateway.fix.store import FileStore, MemoryStore

log = logging.getLogger("gateway.server")

DEFAULT_MAX_MESSAGE_SIZE = codec.DEFAULT_MAX_MESSAGE_SIZE
TICK_INTERVAL = 0.5
WRITE_HIGH_WATER = 1 << 20          # stop reading from a client whose output backs up past this
MAX_WRITE_BUFFER = 32 << 20         # and disconnect it past this
STOP_GRACE = 2.0                    # seconds stop() waits for Logout answers

# authenticate(key, logon) -> None when the Logon is acceptable, else the text of the Logout.
Authenticator = Callable[[SessionKey, FixMessage], Optional[str]]


@dataclass
class SessionSettings:
    key: SessionKey
    application: Application
    heartbeat_interval: int = 30
    reset_on_logon: bool = False
    authenticate: Optional[Authenticator] = None
    heartbeat_bounds: tuple[int, int] = DEFAULT_HEARTBEAT_BOUNDS   # HeartBtInt a Logon may ask


def _store_name(key: SessionKey) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", "%s-%s-%s" % key)


class _Connection(asyncio.Protocol):
    __slots__ = ("server", "transport", "session", "framer", "opened_at", "peer")

    def __init__(self, server: "GatewayServer"):
        self.server = server
        self.transport: Optional[asyncio.Transport] = None
        self.session: Optional[Session] = None
        self.framer: Optional[codec.Framer] = codec.Framer(server.max_message_size)
        self.opened_at = time.time()
        self.peer = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self.server._pending.add(self)

    def data_received(self, data: bytes) -> None:
        server = self.server
        now = time.time()
        try:
            session = self.session
            if session is None:
                session = self._identify(data, now)
                if session is None:
                    return
                data = bytes(self.framer.buffer)
                self.framer = None
            session.receive_data(data, now)
        except Exception:
            log.exception("closing connection from %s after an internal error", self.peer)
            self.transport.abort()
            return
        server._dirty.add(session)
        if not server._flush_scheduled:
            # Write at the end of this event-loop iteration, not per connection: when several
            # sessions' bytes arrive together, each session's output (its own acks plus fills
            # routed to it from the others) is stored, flushed and written once.
            server._flush_scheduled = True
            server._loop.call_soon(server._flush)

    def _identify(self, data: bytes, now: float) -> Optional[Session]:
        framer = self.framer
        framer.feed(data)
        try:
            raw = framer.next_frame()
        except codec.FramingError as e:
            log.info("closing connection from %s: %s", self.peer, e)
            self.transport.close()
            return None
        if raw is None:
            return None
        head = codec.peek_header(raw)
        key = SessionKey(head.get(8, ""), head.get(56, ""), head.get(49, ""))
        session = self.server.sessions.get(key)
        if head.get(35) != "A" or session is None:
            log.info("closing connection from %s: first message is not a Logon for a known session "
                     "(%s)", self.peer, codec.pretty(raw)[:200])
            self.transport.close()
            return None
        if session in self.server._attached:
            log.info("closing connection from %s: session %s already connected", self.peer, key)
            self.transport.close()
            return None
        self.server._pending.discard(self)
        self.server._attached[session] = self
        self.session = session
        session.connection_made(now)
        framer.buffer[:0] = raw          # hand the Logon back, followed by what came after it
        return session

    def connection_lost(self, exc) -> None:
        server = self.server
        server._pending.discard(self)
        session = self.session
        if session is not None:
            if server._attached.get(session) is self:
                del server._attached[session]
            try:
                session.connection_lost(time.time())
            except Exception:
                log.exception("session %s failed on connection loss", session.key)
            server._flush()
        server._closed.set()

    def pause_writing(self) -> None:
        # The client is not reading: stop doing work on its behalf.
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        if not self.transport.is_closing():
            self.transport.resume_reading()


class GatewayServer:
    def __init__(self, host: str, port: int, sessions: list[SessionSettings],
                 store_dir: Optional[Path] = None,
                 max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE, store_fsync: bool = False,
                 before_write: Optional[Callable[[], None]] = None,
                 ssl_context: Optional[ssl.SSLContext] = None):
        """store_fsync=True makes every store flush an fsync (survives power loss, costs a
        disk sync per batch of outgoing messages); by default stores are flushed to the
        operating system before the bytes are written to the socket.

        before_write() is called before any batch of bytes is written to the sockets (once
        per event-loop iteration that has output): `ccerx serve` passes the durable engine's
        commit(), so every order handled in the iteration is made durable with one fsync
        before any acknowledgement leaves the process (group commit). If it raises, nothing
        is written.

        ssl_context (a server-side ssl.SSLContext) makes every connection TLS: the handshake
        runs before any byte reaches a session; a client that fails it is dropped."""
        self.before_write = before_write
        self.ssl_context = ssl_context
        self.host = host
        self.port = port
        self.max_message_size = max_message_size
        self.store_dir = Path(store_dir) if store_dir is not None else None
        self.sessions: dict[SessionKey, Session] = {}
        for s in sessions:
            if s.key in self.sessions:
                raise ValueError("duplicate session %s" % (s.key,))
            store = (FileStore(self.store_dir, _store_name(s.key), fsync=store_fsync)
                     if self.store_dir else MemoryStore())
            self.sessions[s.key] = Session(
                s.key, s.application, store, heartbeat_interval=s.heartbeat_interval,
                reset_on_logon=s.reset_on_logon, authenticate=s.authenticate,
                router=self._route, max_message_size=max_message_size,
                heartbeat_bounds=s.heartbeat_bounds)
        self._attached: dict[Session, _Connection] = {}
        self._pending: set[_Connection] = set()
        self._dirty: set[Session] = set()
        self._flush_scheduled = False
        self._server: Optional[asyncio.AbstractServer] = None
        self._ticker: Optional[asyncio.Task] = None
        self._stopped: Optional[asyncio.Event] = None
        self._closed: asyncio.Event = asyncio.Event()
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        self._closed = asyncio.Event()
        self._server = await self._loop.create_server(lambda: _Connection(self), self.host, self.port,
                                                      ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        self._ticker = asyncio.create_task(self._tick_forever())
        log.info("FIX gateway listening on %s:%d (%d sessions)", self.host, self.port, len(self.sessions))

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        await self._stopped.wait()

    async def stop(self) -> None:
        """Log out every live session, wait briefly for the answers, flush stores, close."""
        if self._server is None:
            return
        self._server.close()
        now = time.time()
        for session in list(self._attached):
            session.logout(now)
            self._dirty.add(session)
        self._flush()
        deadline = time.monotonic() + STOP_GRACE
        while self._attached and time.monotonic() < deadline:
            self._closed.clear()
            try:
                await asyncio.wait_for(self._closed.wait(), max(0.01, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                break
        for conn in list(self._attached.values()) + list(self._pending):
            conn.transport.abort()
        await asyncio.sleep(0)
        if self._ticker is not None:
            self._ticker.cancel()
            try:
                await self._ticker
            except asyncio.CancelledError:
                pass
        for session in self.sessions.values():
            session.store.close()
        await self._server.wait_closed()
        self._server = None
        self._stopped.set()

    # ------------------------------------------------------------------ application side
    def deliver(self, outbound: list[Outbound]) -> None:
        """Send application messages from outside a callback (event loop thread only)."""
        self._route(outbound)

    def deliver_threadsafe(self, outbound: list[Outbound]) -> None:
        self._loop.call_soon_threadsafe(self._route, outbound)

    def _route(self, outbound: list[Outbound]) -> None:
        now = time.time()
        for key, message in outbound:
            session = self.sessions.get(key)
            if session is None:
                raise KeyError("no FIX session %s" % (key,))
            session.send(message, now)
            self._dirty.add(session)
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    # ------------------------------------------------------------------ transport
    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._dirty and self.before_write is not None:
            try:
                self.before_write()
            except Exception:
                log.critical("not sending: the commit before writing failed", exc_info=True)
                return
        while self._dirty:
            session = self._dirty.pop()
            data = session.data_to_send()
            conn = self._attached.get(session)
            if conn is None:
                continue
            transport = conn.transport
            if data:
                transport.write(data)
            if session.wants_close:
                transport.close()
            elif transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
                log.warning("disconnecting %s: %d bytes unread", session.key, transport.get_write_buffer_size())
                transport.abort()

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_INTERVAL)
            now = time.time()
            try:
                for session in list(self._attached):
                    session.tick(now)
                    self._dirty.add(session)
                for conn in list(self._pending):
                    if now - conn.opened_at > LOGON_TIMEOUT:
                        conn.transport.abort()
                        self._pending.discard(conn)
                self._flush()
            except Exception:
                log.exception("tick failed")


def conformance_session() -> SessionSettings:
    """The QuickFIX acceptance-test session: acceptor ISLD, initiator TW44, echo application."""
    from ccerx.gateway.fix.echo import EchoApplication
    return SessionSettings(key=SessionKey("FIX.4.4", "ISLD", "TW44"), application=EchoApplication(),
                           heartbeat_interval=30, reset_on_logon=True)


async def run_conformance_server(host: str = "127.0.0.1", port: int = 0,
                                 store_dir: Optional[Path] = None) -> GatewayServer:
    """Start a gateway with only the conformance session; returns the started server."""
    server = GatewayServer(host, port, [conformance_session()], store_dir=store_dir)
    await server.start()
    return server


def main(argv=None) -> int:
    """python -m gateway.server [--host H] [--port N]: the conformance session alone."""
    import argparse
    import signal
    ap = argparse.ArgumentParser(description="FIX gateway with only the ISLD/TW44 echo session")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9878)
    ap.add_argument("--store-dir", type=Path)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    async def run():
        server = await run_conformance_server(args.host, args.port, args.store_dir)
        print("listening on %s:%d" % (args.host, server.port), flush=True)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(server.stop()))
        await server.serve_forever()
    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
