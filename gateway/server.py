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
      connection only;
    * keeps one client from stalling the others (issue 12): a connection's bytes are handed
      to its session at most READ_SLICE at a time, one slice per event-loop turn; a
      ResendRequest is answered RESEND_CHUNK messages at a time, at most RESEND_RATE a
      second, and only while the client reads (no chunk while its transport is paused for
      writing); application messages over
      the session's rate (limits.MessageRate, from the gateway config) are answered with a
      BusinessMessageReject instead of being processed, and a session that stays over it is
      logged out;
    * checks passwords off the event loop: the first Logon of a connection is checked in a
      worker thread (reading from that connection paused meanwhile) and its verdict handed to
      the session when the Logon reaches it, so the session stays sans-IO and a guesser's
      scrypt does not delay anyone's orders; after a failed logon the CompID and the source
      address are backed off (limits.LogonBackoff), and a logon during the back-off is
      refused without checking the password.

Public API (stable; the exchange application and `ccerx serve` code against it):

    SessionSettings(key, application, heartbeat_interval=30, reset_on_logon=False, authenticate=None,
                    heartbeat_bounds=(1, 300))
    server = GatewayServer(host, port, sessions, store_dir=None, max_message_size=...,
                           limits=SessionLimits(...))    # gateway config [gateway] limits
    server.password_checks; server.logons_backed_off     # counters (tests, the soak)
    await server.start(); server.port; await server.serve_forever(); await server.stop()
    server.deliver([(SessionKey, FixMessage), ...])      # from the event loop's thread
    conformance_session() -> SessionSettings              # ISLD/TW44 on the echo application
"""
from __future__ import annotations

import asyncio
import logging
import math
import re
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ccerx.gateway.fix import codec
from ccerx.gateway.fix.application import Application, FixMessage, Outbound, SessionKey
from ccerx.gateway.fix.session import DEFAULT_HEARTBEAT_BOUNDS, LOGON_TIMEOUT, Session, State
from ccerx.gateway.fix.store import FileStore, MemoryStore
from ccerx.gateway.limits import (LogonBackoff, MessageRate, QuietRefusal, ServiceRefusal,
                                  SessionLimits)

log = logging.getLogger("gateway.server")

DEFAULT_MAX_MESSAGE_SIZE = codec.DEFAULT_MAX_MESSAGE_SIZE
TICK_INTERVAL = 0.5
WRITE_HIGH_WATER = 1 << 20          # stop reading from a client whose output backs up past this
TLS_HANDSHAKE_TIMEOUT = 5.0         # s; a stalled handshake held a descriptor 60 s (asyncio's)
MAX_PENDING_PER_ADDRESS = 64        # connections not yet logged on, per source address: one host
                                    # cannot use up the process's descriptors (a review did)
MAX_WRITE_BUFFER = 32 << 20         # and disconnect it past this
STOP_GRACE = 2.0                    # seconds stop() waits for Logout answers
READ_SLICE = 4 << 10                # bytes of one connection handled per event-loop turn
# While a session is over its message rate, one slice of it per OVER_RATE_PAUSE (4 KB, about
# 25 orders, per 20 ms, ~1,250 a second): its excess is still read and rejected (not just
# delayed), but at a bounded pace instead of at full speed, and the rest waits in its own TCP
# buffers. (At 5 ms the flood's accepted orders cost an fsync every 5 ms and another broker's
# p50 doubled; at 20 ms it stays at its baseline.)
OVER_RATE_PAUSE = 0.020
OVER_RATE_FLUSH_DELAY = 0.1         # its answers wait at most this for a flush (see _deliver)
REFUSAL_DELAY_MAX = 1.0             # a logon refused during a back-off waits wait/8, at most this
RESEND_CHUNK = 16                   # messages of a resend produced per event-loop turn
RESEND_RATE = 20_000                # at most this many a second per session (100k in 5 s):
# a resend at full speed took a whole core, and on a busy machine the other sessions' orders
# waited for the scheduler to come back to it (benchmarks/README.md, "Under attack")
# (each slice or chunk costs well under a millisecond, so a broker's order waits at most about
# that long behind another session's flood or resend: see benchmarks/README, "Under attack")

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
    __slots__ = ("server", "transport", "session", "framer", "opened_at", "peer", "backlog",
                 "held", "checking", "logon_length", "waiting", "waiting_bytes",
                 "close_when_sent")

    def __init__(self, server: "GatewayServer"):
        self.server = server
        self.transport: Optional[asyncio.Transport] = None
        self.session: Optional[Session] = None
        self.framer: Optional[codec.Framer] = codec.Framer(server.max_message_size)
        self.opened_at = time.time()
        self.peer = None
        self.backlog = bytearray()       # received, not yet handed to the session (see _receive)
        self.held: set[str] = set()      # why reading is paused: "write", "backlog", "check"
        self.checking = False            # its Logon's password is being checked
        self.logon_length = 0            # the Logon at the head of framer.buffer (one slice)
        self.waiting: list[tuple[int, bytes]] = []   # (durable ticket needed, bytes), in order
        self.waiting_bytes = 0
        self.close_when_sent = False     # close once `waiting` is written

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
        address = self.peer[0] if self.peer else None
        pending = self.server._pending_by_address
        if address is not None and pending.get(address, 0) >= MAX_PENDING_PER_ADDRESS:
            self.server.connections_refused += 1
            if self.server.connections_refused % 1000 == 1:      # said, not once per connection
                log.warning("refusing connections from %s: %d not yet logged on (refused so "
                            "far: %d)", address, MAX_PENDING_PER_ADDRESS,
                            self.server.connections_refused)
            transport.abort()
            return
        if address is not None:
            pending[address] = pending.get(address, 0) + 1
        self.server._pending.add(self)

    def data_received(self, data: bytes) -> None:
        if self.session is not None:
            self._receive(data)
            return
        if self.checking:                # (reading is paused; whatever was in flight waits)
            self.framer.buffer += data
            return
        try:
            session = self._identify(data, time.time())
        except Exception:
            log.exception("closing connection from %s after an internal error", self.peer)
            self.transport.abort()
            return
        if session is not None:
            self._hand_over_framed()

    def _hand_over_framed(self) -> None:
        """Feed the session the Logon and what came after it (the framer's buffer)."""
        data = bytes(self.framer.buffer)
        self.framer = None
        self._receive(data, self.logon_length)

    def _receive(self, data: bytes, first: int = 0) -> None:
        """Hand bytes to the session at most READ_SLICE (or `first`) at a time, one slice per
        event-loop turn; while a backlog remains, reading from the client is paused."""
        if self.backlog:
            self.backlog += data
            return
        cut = max(READ_SLICE, first)
        if len(data) > cut:
            self.backlog += data[cut:]
            data = data[:cut]
            self.hold("backlog")
            self._deliver(data)
            self._next_slice()
            return
        self._deliver(data)

    def _next_slice(self) -> None:
        """The backlog's next slice: on the next event-loop turn (after every other
        connection's), or OVER_RATE_PAUSE later while the session is over its message rate."""
        rate = self.server._rates.get(self.session.key) if self.session is not None else None
        if rate is not None and rate.exceeded(time.monotonic()):
            self.server._loop.call_later(OVER_RATE_PAUSE, self._feed_backlog)
        else:
            self.server._loop.call_soon(self._feed_backlog)

    def _feed_backlog(self) -> None:
        if self.transport.is_closing() or self.session is None:
            self.backlog.clear()
            return
        data = bytes(self.backlog[:READ_SLICE])
        del self.backlog[:READ_SLICE]
        self._deliver(data)
        if self.backlog:
            self._next_slice()
        else:
            self.release("backlog")

    def _deliver(self, data: bytes) -> None:
        server = self.server
        session = self.session
        now = time.time()
        try:
            session.receive_data(data, now)
            rate = server._rates.get(session.key)
            if (rate is not None and session.state is State.LOGGED_ON
                    and rate.sustained(time.monotonic())):
                text = ("logged out: over the message rate of %d a second for %d s"
                        % (rate.rate, rate.logout_after))
                log.warning("%s: %s", session.key, text)
                session.logout(now, text)
        except Exception:
            log.exception("closing connection from %s after an internal error", self.peer)
            self.transport.abort()
            return
        server._dirty.add(session)
        rate = server._rates.get(session.key)
        if rate is not None and rate.exceeded(time.monotonic()):
            # Over its rate: its answers go out with the next flush anyone else needs, or
            # OVER_RATE_FLUSH_DELAY from now, so a flood does not cost a commit (an fsync) of
            # its own every few milliseconds for the others to wait behind.
            if not server._flush_scheduled and server._late_flush is None:
                server._late_flush = server._loop.call_later(OVER_RATE_FLUSH_DELAY, server._flush)
        elif not server._flush_scheduled:
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
            session.probe(now)      # is the connection holding it dead? (written at the next tick)
            self.transport.close()
            return None
        framer.buffer[:0] = raw          # hand the Logon back, followed by what came after it
        self.logon_length = len(raw)
        if key in self.server._checkers:
            self.server._check_logon(self, session, raw)    # attaches when the check is done
            return None
        self.attach(session, now)
        return session

    def attach(self, session: Session, now: float) -> None:
        self.server._unpend(self)
        self.server._attached[session] = self
        self.session = session
        session.connection_made(now)

    def refuse(self, session: Session, text: str) -> None:
        """Refuse a Logon without attaching the connection to its session (nothing changes)."""
        log.info("refusing a logon for %s from %s: %s", session.key.their_comp_id, self.peer, text)
        self.transport.write(session.logon_refusal(text, time.time()))
        self.transport.close()

    def hold(self, reason: str) -> None:
        if not self.held:
            self.transport.pause_reading()
        self.held.add(reason)

    def release(self, reason: str) -> None:
        if reason in self.held:
            self.held.discard(reason)
            if not self.held and not self.transport.is_closing():
                self.transport.resume_reading()

    def connection_lost(self, exc) -> None:
        server = self.server
        server._unpend(self)
        self.waiting.clear()             # (in the session's store: resent on request)
        server._waiting.discard(self)
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
        # The client is not reading: stop doing work on its behalf (reading from it, resending).
        self.hold("write")

    def resume_writing(self) -> None:
        self.release("write")
        if self.session is not None and self.session.resend_pending:
            self.server._resume_resend(self.session)


class GatewayServer:
    def __init__(self, host: str, port: int, sessions: list[SessionSettings],
                 store_dir: Optional[Path] = None,
                 max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE, store_fsync: bool = False,
                 before_write: Optional[Callable[[], None]] = None,
                 ssl_context: Optional[ssl.SSLContext] = None,
                 limits: SessionLimits = SessionLimits(), durability=None):
        """store_fsync=True makes every store flush an fsync (survives power loss, costs a
        disk sync per batch of outgoing messages); by default stores are flushed to the
        operating system before the bytes are written to the socket.

        before_write() is called before any batch of bytes is written to the sockets (once
        per event-loop iteration that has output): `ccerx serve` passes the durable engine's
        commit(), so every order handled in the iteration is made durable with one fsync
        before any acknowledgement leaves the process (group commit). If it raises, nothing
        is written.

        ssl_context (a server-side ssl.SSLContext) makes every connection TLS: the handshake
        runs before any byte reaches a session; a client that fails it is dropped.

        limits: every session's message rate and the failed-logon back-off (the gateway
        config's; see limits.py for the defaults).

        durability (instead of before_write: the durable engine, `ccerx serve` passes it) has
        commit_async() -> ticket, durable_ticket and add_durable_listener(fn): once per
        event-loop iteration that has output the server starts the commit of everything
        applied so far and goes on at once; a session's output holding application messages
        waits, per connection and in order, until the journal's writer reports that ticket
        durable (its fsync done); session-level output (heartbeats, rejects) of a session
        with nothing waiting goes out at once. So no acknowledgement leaves before its command
        is on disk, and the event loop never waits for the disk. A connection with more than
        WRITE_HIGH_WATER bytes waiting is not read from until they are written."""
        self.before_write = before_write
        self.durability = durability
        self._waiting: set[_Connection] = set()    # connections with output awaiting an fsync
        if durability is not None:
            durability.add_durable_listener(self._on_durable)
        self.limits = limits
        self._rates: dict[SessionKey, MessageRate] = {}
        self._checkers: dict[SessionKey, Authenticator] = {}   # sessions with a password check
        self._verdicts: dict[SessionKey, Optional[str]] = {}   # checked, on the way to a session
        self._checking: set[SessionKey] = set()
        self._backoff = LogonBackoff(limits.logon_backoff_ms / 1000, limits.logon_backoff_max_ms / 1000)
        self._check_pool: Optional[ThreadPoolExecutor] = None
        self._resend_scheduled: set[Session] = set()
        self.password_checks = 0           # passwords checked (each an scrypt)
        self.logons_backed_off = 0         # logons refused during a back-off, unchecked
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
            application, authenticate = self._guarded(s)
            self.sessions[s.key] = Session(
                s.key, application, store, heartbeat_interval=s.heartbeat_interval,
                reset_on_logon=s.reset_on_logon, authenticate=authenticate,
                router=self._route, max_message_size=max_message_size,
                heartbeat_bounds=s.heartbeat_bounds)
        for session in self.sessions.values():
            session.resend_chunk = RESEND_CHUNK
        self._attached: dict[Session, _Connection] = {}
        self._pending: set[_Connection] = set()
        self._pending_by_address: dict[str, int] = {}    # source address -> len of its _pending
        self.connections_refused = 0      # over MAX_PENDING_PER_ADDRESS
        self._dirty: set[Session] = set()
        self._flush_scheduled = False
        self._late_flush: Optional[asyncio.TimerHandle] = None
        self._server: Optional[asyncio.AbstractServer] = None
        self._ticker: Optional[asyncio.Task] = None
        self._stopped: Optional[asyncio.Event] = None
        self._closed: asyncio.Event = asyncio.Event()
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    def _unpend(self, conn: "_Connection") -> None:
        """The connection logged on or went: no longer counted against its address."""
        if conn in self._pending:
            self._pending.discard(conn)
            address = conn.peer[0] if conn.peer else None
            left = self._pending_by_address.get(address, 0) - 1
            if left > 0:
                self._pending_by_address[address] = left
            else:
                self._pending_by_address.pop(address, None)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        self._closed = asyncio.Event()
        self._server = await self._loop.create_server(
            lambda: _Connection(self), self.host, self.port, ssl=self.ssl_context,
            ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT if self.ssl_context is not None else None)
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
        if self._check_pool is not None:
            self._check_pool.shutdown(wait=False, cancel_futures=True)
            self._check_pool = None
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
        if self._late_flush is not None:
            self._late_flush.cancel()
            self._late_flush = None
        if self._dirty and self.before_write is not None:
            try:
                self.before_write()
            except Exception:
                log.critical("not sending: the commit before writing failed", exc_info=True)
                return
        durability = self.durability
        ticket = durable = 0
        if self._dirty and durability is not None:
            try:
                ticket = durability.commit_async()
            except Exception:
                log.critical("not sending: the journal failed", exc_info=True)
                return
            durable = durability.durable_ticket
        while self._dirty:
            session = self._dirty.pop()
            needs = ticket if session.holds_application_messages else 0
            data = session.data_to_send()
            conn = self._attached.get(session)
            if conn is None:
                continue
            transport = conn.transport
            if data:
                if conn.waiting or needs > durable:
                    self._wait_durable(conn, needs, data)
                else:
                    transport.write(data)
            if session.resend_pending and "write" not in conn.held:
                self._resume_resend(session)
            if session.wants_close:
                if conn.waiting:
                    conn.close_when_sent = True
                else:
                    transport.close()
            elif transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
                log.warning("disconnecting %s: %d bytes unread", session.key, transport.get_write_buffer_size())
                transport.abort()

    def _wait_durable(self, conn: _Connection, ticket: int, data: bytes) -> None:
        """Hold a connection's output until `ticket` is durable (behind what already waits)."""
        conn.waiting.append((ticket, data))
        conn.waiting_bytes += len(data)
        self._waiting.add(conn)
        if conn.waiting_bytes > WRITE_HIGH_WATER:
            conn.hold("durable")

    def _on_durable(self, ticket: int, error) -> None:
        """The journal's writer made a group durable (its thread): release output on the loop."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._release_durable, error)

    def _release_durable(self, error=None) -> None:
        if error is not None:
            log.critical("the journal failed: acknowledgements waiting for it are not sent "
                         "(%s)", error)
            return
        durable = self.durability.durable_ticket
        for conn in list(self._waiting):
            waiting = conn.waiting
            ready = 0
            while ready < len(waiting) and waiting[ready][0] <= durable:
                ready += 1
            if not ready:
                continue
            data = b"".join([chunk for _, chunk in waiting[:ready]])
            del waiting[:ready]
            conn.waiting_bytes -= len(data)
            transport = conn.transport
            if not transport.is_closing():
                transport.write(data)
            if waiting:
                continue
            self._waiting.discard(conn)
            conn.release("durable")
            if conn.close_when_sent:
                transport.close()
            elif transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
                log.warning("disconnecting %s: %d bytes unread", conn.session.key,
                            transport.get_write_buffer_size())
                transport.abort()

    def _resume_resend(self, session: Session) -> None:
        """Produce the next chunk of a resend RESEND_CHUNK / RESEND_RATE seconds from now
        (other sessions' work goes first)."""
        if session not in self._resend_scheduled:
            self._resend_scheduled.add(session)
            self._loop.call_later(RESEND_CHUNK / RESEND_RATE, self._next_resend_chunk, session)

    def _next_resend_chunk(self, session: Session) -> None:
        self._resend_scheduled.discard(session)
        conn = self._attached.get(session)
        if conn is None or "write" in conn.held or not session.resend_pending:
            return
        try:
            session.continue_resend(time.time())
        except Exception:
            log.exception("closing connection from %s after an internal error", conn.peer)
            conn.transport.abort()
            return
        self._dirty.add(session)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    # ------------------------------------------------------------------ limits
    def _guarded(self, s: SessionSettings):
        """The application and authenticator a session gets: behind its message rate, and
        with the password check done by the server before the Logon reaches the session."""
        limits = self.limits
        application = s.application
        if limits.message_rate > 0:
            rate = MessageRate(limits.message_rate, limits.message_burst, limits.rate_logout_after_s)
            self._rates[s.key] = rate
            application = _RateLimited(application, rate)
        if s.authenticate is None:
            return application, None
        check = self._checkers[s.key] = s.authenticate

        def authenticate(key: SessionKey, logon: FixMessage) -> Optional[str]:
            verdict = self._verdicts.pop(key, _UNCHECKED)
            if verdict is _UNCHECKED:    # a Logon the server did not check on arrival
                self.password_checks += 1
                return check(key, logon)
            return verdict
        return application, authenticate

    def _check_logon(self, conn: _Connection, session: Session, raw: bytes) -> None:
        """A connection's first message is a Logon for a password-protected session: refuse it
        during a back-off, else check the password in the worker thread, then attach."""
        key = session.key
        address = conn.peer[0] if conn.peer else "?"
        wait = self._backoff.wait(key.their_comp_id, address, time.monotonic())
        if wait > 0:
            # Refused without a check, and not at once: a guesser that waits for its answer
            # (as one connection at a time does) tries a few times a second, not thousands.
            self.logons_backed_off += 1
            conn.hold("check")
            self._loop.call_later(min(wait / 8, REFUSAL_DELAY_MAX), self._refuse_later, conn, session)
            return
        if key in self._checking:
            conn.refuse(session, "another logon for %s is being checked" % key.their_comp_id)
            return
        try:
            logon = FixMessage(codec.parse(raw))
        except codec.GarbledMessage:
            conn.attach(session, time.time())         # the session hangs up on it
            conn._hand_over_framed()
            return
        if self._check_pool is None:
            # One worker: a password check is an scrypt (~50 ms of one core); the event loop
            # keeps the other core, and checks queue rather than crowd it.
            self._check_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="logon-check")
        self._checking.add(key)
        conn.checking = True
        conn.hold("check")
        check = self._checkers[key]

        def run_check():
            if conn.transport.is_closing():
                return False, None                    # gone while waiting: no scrypt
            return True, check(key, logon)

        future = self._loop.run_in_executor(self._check_pool, run_check)
        future.add_done_callback(lambda f: self._checked(conn, session, address, f))

    def _refuse_later(self, conn: _Connection, session: Session) -> None:
        if conn.transport.is_closing():
            return
        key = session.key
        address = conn.peer[0] if conn.peer else "?"
        wait = self._backoff.wait(key.their_comp_id, address, time.monotonic())
        conn.refuse(session, "too many failed logons: try again in %d s" % max(1, math.ceil(wait)))

    def _checked(self, conn: _Connection, session: Session, address: str, future) -> None:
        key = session.key
        self._checking.discard(key)
        conn.checking = False
        try:
            ran, verdict = future.result()
        except asyncio.CancelledError:
            return
        except Exception:
            log.exception("the password check for %s failed", key)
            ran, verdict = False, "logon check failed"
        if ran and isinstance(verdict, ServiceRefusal):
            pass                               # not about credentials: no back-off either way
        elif ran:
            self.password_checks += 1
            if verdict:
                wait = self._backoff.failed(key.their_comp_id, address, time.monotonic())
                log.info("failed logon for %s from %s (%s): backed off %.1f s",
                         key.their_comp_id, address, verdict, wait)
            else:
                self._backoff.succeeded(key.their_comp_id, address)
        if conn.transport.is_closing():
            return
        if isinstance(verdict, QuietRefusal):     # no Logout: see QuietRefusal
            log.info("closing a logon for %s from %s unanswered: %s", key.their_comp_id,
                     conn.peer, verdict)
            conn.transport.close()
            return
        if session in self._attached:
            log.info("closing connection from %s: session %s already connected", conn.peer, key)
            conn.transport.close()
            return
        conn.release("check")
        conn.attach(session, time.time())
        self._verdicts[key] = verdict
        try:
            conn._hand_over_framed()           # the Logon reaches the session with its verdict
        finally:
            self._verdicts.pop(key, None)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

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
                        self._unpend(conn)
                self._flush()
            except Exception:
                log.exception("tick failed")


_UNCHECKED = object()


class _RateLimited:
    """The application behind one session, with the session's message rate in front of it:
    a message over the rate is answered with a BusinessMessageReject (35=j) saying so and
    is not processed (its sequence number is used, as for any rejected message)."""
    __slots__ = ("inner", "rate")

    def __init__(self, inner: Application, rate: MessageRate):
        self.inner = inner
        self.rate = rate

    def on_logon(self, key: SessionKey) -> list[Outbound]:
        self.rate.reset()
        return self.inner.on_logon(key)

    def on_logout(self, key: SessionKey) -> list[Outbound]:
        return self.inner.on_logout(key)

    def on_message(self, key: SessionKey, message: FixMessage) -> list[Outbound]:
        rate = self.rate
        if rate.take(time.monotonic()):
            return self.inner.on_message(key, message)
        reject = FixMessage.of("j", (45, message.get(34)), (372, message.msg_type))
        ref_id = message.get(11)
        if ref_id is not None:
            reject.append(379, ref_id)
        reject.append(380, 0)
        reject.append(58, "rate limit: over %d messages a second (burst %d); message not "
                          "processed" % (rate.rate, rate.burst))
        return [(key, reject)]

    def __getattr__(self, name):
        return getattr(self.inner, name)


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
