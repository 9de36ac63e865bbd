"""The FIX 4.4 session layer (acceptor side) as a sans-IO state machine.

Theory of operation
-------------------
A Session is one FIX session (SessionKey: BeginString, our CompID, their CompID). It lives as
long as the gateway, across any number of TCP connections, and owns the session's message
store (sequence numbers and sent messages). It never touches a socket or a clock: the driver
(gateway/server.py, or a test) calls

    connection_made(now)        a TCP connection was attached to this session
    receive_data(bytes, now)    bytes arrived (framed by codec.Framer, parsed by codec.parse)
    tick(now)                   periodically: heartbeats, test requests, timeouts
    probe(now)                  another connection asks for this session: test this one now
    send(FixMessage, now)       an application message to send (stored even when logged out)
    logout(now, text)           begin a clean logout (gateway shutdown)
    connection_lost(now)        the TCP connection is gone

and collects the consequences:

    data_to_send()  -> bytes    flushes the store first, so stored == what went on the wire
    wants_close     -> bool     the driver should close the connection after writing

An application with an `on_session_restored(key, sent)` method is handed, when the session is
created, the messages the session sent before (its store, oldest first): after a restart the
exchange application learns the day's finished orders from their execution reports.

A ResendRequest over many messages need not be answered at once: with `resend_chunk` set
(the server sets it), each call produces at most that many resent messages and leaves
`resend_pending` true; the driver calls continue_resend(now) (when the connection can take
more) until it is false. Meanwhile the session keeps handling what arrives, and whatever it
sends anew is held back until the resend is complete, so the counterparty still receives
every sequence number in order.

Each incoming frame is handled as a QuickFIX acceptor handles it, in this order (the
acceptance suite checks the order by the messages it gets back):

    garbled frame (bad BodyLength, CheckSum, tag, first three fields)
        -> ignored when logged on, disconnect before logon
    BeginString, Sender/TargetCompID present, data-dictionary validation (dictionary.py)
        -> SessionReject(reason, tag)
    verify: logon state, SendingTime within 120 s, CompIDs, MsgSeqNum too high (queue the
        message, ResendRequest) or too low (PossDup: ignore; else Logout and disconnect)
    the message's own handler (Logon, Heartbeat, TestRequest, ResendRequest, Reject,
        SequenceReset, Logout, or the application)
    then the queued messages that have become next in sequence.

Every protocol problem is raised as dictionary.SessionReject and turned into a Reject (3) in
exactly one place, Session._reject. The application is called synchronously, in sequence
order, with validated messages; what it returns is sent (to this session) or handed to the
router (to other sessions). Resends replay application messages from the store with
PossDupFlag=Y and OrigSendingTime, and replace admin messages by SequenceReset-GapFill.

States and transitions (TRANSITIONS below):

    DISCONNECTED --connect--> AWAITING_LOGON --logon--> LOGGED_ON --send logout--> LOGOUT_SENT
    LOGGED_ON --logon with ResetSeqNumFlag--> LOGGED_ON
    AWAITING_LOGON / LOGGED_ON / LOGOUT_SENT --disconnect--> CLOSING
    any --connection lost--> DISCONNECTED
"""
from __future__ import annotations

import logging
from enum import Enum
from typing import Callable, Optional

from ccerx.gateway.fix import codec, dictionary
from ccerx.gateway.fix.application import Application, FixMessage, Outbound, SessionKey
from ccerx.gateway.fix.dictionary import HEADER_TAGS, TRAILER_TAGS, Reason, SessionReject
from ccerx.gateway.fix.store import MessageStore

log = logging.getLogger("gateway.fix.session")

MAX_LATENCY = 120.0          # SendingTime accuracy, seconds
LOGOUT_TIMEOUT = 2.0         # wait this long for the answer to our Logout
LOGON_TIMEOUT = 10.0         # a connection must log on within this time
TEST_REQUEST_FACTOR = 1.2    # send TestRequest after 1.2 x HeartBtInt of silence
TIMEOUT_FACTOR = 2.4         # and give up after 2.4 x HeartBtInt
MAX_QUEUED = 10_000          # messages held while waiting for a resend
PROBE_SILENCE = 2.0          # probe() tests a connection only after this much silence
PROBE_TIMEOUT = 10.0         # a probed connection must answer its TestRequest within this
# HeartBtInt (108) a Logon may ask for, seconds: 0 (no heartbeats) or an enormous interval
# would let a silent connection hold the session forever and lock the broker's own
# reconnect out; a Logon outside the bounds is refused with a Logout saying why.
DEFAULT_HEARTBEAT_BOUNDS = (1, 300)
# The largest sequence number accepted in MsgSeqNum, BeginSeqNo, EndSeqNo or NewSeqNo: far
# beyond any real session, inside a signed 64-bit integer and the store's 20-digit field.
# Above it a message gets a Reject 373=5 (value incorrect) and changes nothing.
MAX_SEQ_NUM = 10**18 - 1
_SEQ_NUM_TAGS = (34, 7, 16, 36)     # MsgSeqNum, BeginSeqNo, EndSeqNo, NewSeqNo

Authenticator = Callable[[SessionKey, FixMessage], Optional[str]]
Router = Callable[[list[Outbound]], None]


class State(Enum):
    DISCONNECTED = "disconnected"
    AWAITING_LOGON = "awaiting logon"
    LOGGED_ON = "logged on"
    LOGOUT_SENT = "logout sent"
    CLOSING = "closing"


class Event(Enum):
    CONNECT = "connect"
    LOGON = "logon"
    SEND_LOGOUT = "send logout"
    DISCONNECT = "disconnect"
    CONNECTION_LOST = "connection lost"


S, E = State, Event
TRANSITIONS: dict[tuple[State, Event], State] = {
    (S.DISCONNECTED, E.CONNECT): S.AWAITING_LOGON,
    (S.AWAITING_LOGON, E.LOGON): S.LOGGED_ON,
    (S.LOGGED_ON, E.LOGON): S.LOGGED_ON,
    (S.LOGOUT_SENT, E.LOGON): S.LOGGED_ON,
    (S.LOGGED_ON, E.SEND_LOGOUT): S.LOGOUT_SENT,
    (S.AWAITING_LOGON, E.DISCONNECT): S.CLOSING,
    (S.LOGGED_ON, E.DISCONNECT): S.CLOSING,
    (S.LOGOUT_SENT, E.DISCONNECT): S.CLOSING,
    (S.AWAITING_LOGON, E.CONNECTION_LOST): S.DISCONNECTED,
    (S.LOGGED_ON, E.CONNECTION_LOST): S.DISCONNECTED,
    (S.LOGOUT_SENT, E.CONNECTION_LOST): S.DISCONNECTED,
    (S.CLOSING, E.CONNECTION_LOST): S.DISCONNECTED,
}
LOGGED_ON_STATES = (S.LOGGED_ON, S.LOGOUT_SENT)


class _Resend:
    """A ResendRequest being answered: the range, how far it got, the gap fill it is in."""
    __slots__ = ("begin", "end", "next_sender", "cursor", "current", "gap_begin", "last")

    def __init__(self, begin: int, end: int, next_sender: int):
        self.begin, self.end, self.next_sender = begin, end, next_sender
        self.cursor = self.current = begin
        self.gap_begin = self.last = 0


class LocalProtocolError(Exception):
    """The driver used the session wrongly (a bug, not a counterparty problem)."""


class _UnsupportedVersion(Exception):
    pass


_HEADER_OR_TRAILER = HEADER_TAGS | TRAILER_TAGS
_ROUTE_REVERSAL = ((115, 128), (128, 115), (116, 129), (129, 116), (144, 145), (145, 144))


def _as_int(text: Optional[str]) -> Optional[int]:
    """An ASCII integer field's value, or None (str.isdigit alone accepts e.g. superscripts)."""
    if text and text.isascii() and (text.isdigit() or (text[0] == "-" and text[1:].isdigit())):
        return int(text)
    return None


class Session:
    def __init__(self, key: SessionKey, application: Application, store: MessageStore,
                 heartbeat_interval: int = 30, reset_on_logon: bool = False,
                 authenticate: Optional[Authenticator] = None, router: Optional[Router] = None,
                 max_message_size: int = codec.DEFAULT_MAX_MESSAGE_SIZE,
                 heartbeat_bounds: tuple[int, int] = DEFAULT_HEARTBEAT_BOUNDS):
        if not 0 <= heartbeat_bounds[0] <= heartbeat_bounds[1]:
            raise ValueError("heartbeat bounds must be 0 <= low <= high: %r" % (heartbeat_bounds,))
        self.key = key
        self.heartbeat_bounds = heartbeat_bounds
        self.application = application
        self.store = store
        self.heartbeat_interval = heartbeat_interval
        self.reset_on_logon = reset_on_logon
        self.authenticate = authenticate
        self.router = router
        self.max_message_size = max_message_size
        self.state = State.DISCONNECTED
        # the constant parts of our standard header: 34=<seq>|49=us|52=<time>|56=them|
        self._header_49_52 = "\x0149=%s\x0152=" % key.our_comp_id
        self._header_56 = "\x0156=%s\x01" % key.their_comp_id
        self._begin = codec.begin_bytes(key.begin_string)
        self._framer = codec.Framer(max_message_size)
        self._out: list[bytes] = []
        self._now = 0.0
        self._queue: dict[int, list[tuple[int, str]]] = {}
        self._resend_range: Optional[tuple[int, int]] = None
        self._received_reset = False
        self._hb = heartbeat_interval
        self._test_requests = 0
        self._last_sent = 0.0
        self._last_received = 0.0
        self._connected_at = 0.0
        self._logout_sent_at = 0.0
        self._probed_at = 0.0        # when probe() sent its TestRequest (0: none outstanding)
        self.close_reason: Optional[str] = None
        self.resend_chunk: Optional[int] = None    # None: answer a ResendRequest at once
        # An application may learn from what this session sent before a restart (the
        # exchange recovers the day's finished orders from their execution reports).
        restored = getattr(application, "on_session_restored", None)
        if restored is not None:
            restored(key, store.each(1, store.next_sender - 1))
        self._resending: Optional[_Resend] = None
        self._resend_out: Optional[list[bytes]] = None    # resend output; _out is held meanwhile
        self._app_out = False        # an application message is among what waits to be sent

    # ------------------------------------------------------------------ driver interface
    @property
    def logged_on(self) -> bool:
        return self.state in LOGGED_ON_STATES

    @property
    def wants_close(self) -> bool:
        return self.state is State.CLOSING

    def connection_made(self, now: float) -> None:
        self._now = now
        self._event(Event.CONNECT)
        self._framer = codec.Framer(self.max_message_size)
        self._out.clear()
        self._resending = self._resend_out = None
        self._queue.clear()
        self._resend_range = None
        self._test_requests = 0
        self._hb = self.heartbeat_interval
        self._connected_at = now
        self._last_received = now
        self._probed_at = 0.0
        self.close_reason = None

    def connection_lost(self, now: float) -> None:
        self._now = now
        was_logged_on = self.logged_on
        self._event(Event.CONNECTION_LOST)
        self._out.clear()
        self._resending = self._resend_out = None
        self._queue.clear()
        if was_logged_on:
            self._route(self.application.on_logout(self.key))
        self.store.flush()

    def receive_data(self, data: bytes, now: float) -> None:
        self._now = now
        if self.state not in (S.AWAITING_LOGON, S.LOGGED_ON, S.LOGOUT_SENT):
            return
        framer = self._framer
        framer.feed(data)
        while self.state is not S.CLOSING:
            try:
                raw = framer.next_frame()
            except codec.FramingError as e:
                self._disconnect("unframeable input: %s" % e)
                return
            if raw is None:
                return
            self._next_frame(raw)

    def tick(self, now: float) -> None:
        self._now = now
        state = self.state
        if state is S.AWAITING_LOGON:
            if now - self._connected_at >= LOGON_TIMEOUT:
                self._disconnect("no Logon received")
            return
        if state not in LOGGED_ON_STATES:
            return
        if state is S.LOGOUT_SENT and now - self._logout_sent_at >= LOGOUT_TIMEOUT:
            self._disconnect("timed out waiting for logout response")
            return
        probed_at = self._probed_at
        if probed_at:
            if self._last_received >= probed_at:
                self._probed_at = 0.0                 # it answered: alive
            elif now - probed_at >= PROBE_TIMEOUT:
                self._disconnect("no answer to the TestRequest sent when another connection "
                                 "asked for the session")
                return
        # HeartBtInt 0 (only if the bounds allow it) means no heartbeats, but a silent
        # connection is still timed out, on the interval configured for the session
        hb = self._hb if self._hb > 0 else max(self.heartbeat_interval, 1)
        since_sent = now - self._last_sent
        since_received = now - self._last_received
        if since_sent < hb and since_received < hb:
            return
        if since_received >= TIMEOUT_FACTOR * hb:
            self._disconnect("timed out waiting for heartbeat")
        elif since_received >= TEST_REQUEST_FACTOR * (self._test_requests + 1) * hb:
            self._send_admin("1", [(112, "TEST")])
            self._test_requests += 1
        elif since_sent >= hb and not self._test_requests:
            self._send_admin("0", [])

    def probe(self, now: float) -> None:
        """Another connection asks for this session (the driver refuses it: already connected).
        Test this connection now with a TestRequest instead of waiting for 1.2 x HeartBtInt of
        silence, and hang up if nothing arrives within PROBE_TIMEOUT: a dead connection (the
        broker's machine or network gone without a FIN) then locks the broker's own reconnect
        out for seconds, not 2.4 x HeartBtInt. A live broker answers and loses nothing; one
        TestRequest at a time, however many connections ask, and none to a connection heard
        from in the last PROBE_SILENCE seconds (alive, and what the QuickFIX acceptance
        suite's AlreadyLoggedOn script expects: nothing for the first connection)."""
        self._now = now
        if (self.state is S.LOGGED_ON and not self._probed_at
                and now - self._last_received >= PROBE_SILENCE):
            self._send_admin("1", [(112, "PROBE")])
            self._probed_at = now

    def send(self, message: FixMessage, now: float) -> int:
        """Send an application message (stored, and sent if logged on); returns its MsgSeqNum.

        Fast path: a message with an `encoded_body` (str: its body fields, each
        "tag=value<SOH>", after MsgType; and `msg_type`) goes out as that text, with no field
        list to filter or join (the exchange's ExecutionReports, see translate.py)."""
        self._now = now
        encoded = getattr(message, "encoded_body", None)
        if encoded is not None:
            return self._send_text(message.msg_type, encoded, True)
        fields = message.fields
        if fields and fields[0][0] == 35 and fields[0][1]:
            # The usual shape: MsgType first, then only body fields (one pass, no copies).
            special = _HEADER_OR_TRAILER
            body = [f for f in fields if f[0] not in special]
            if len(body) + 1 == len(fields):
                return self._send_raw(fields[0][1], [], body, app=True)
        msg_type = message.msg_type
        if not msg_type:
            raise LocalProtocolError("message without MsgType: %r" % (message,))
        header, body = [], []
        for tag, value in fields:
            if tag in HEADER_TAGS:
                if tag not in codec.SESSION_OWNED_HEADER:
                    header.append((tag, value))
            elif tag not in TRAILER_TAGS:
                body.append((tag, value))
        return self._send_raw(msg_type, header, body, app=True)

    def logout(self, now: float, text: Optional[str] = None) -> None:
        self._now = now
        if self.state is S.LOGGED_ON:
            self._send_logout(text)
        elif self.state is S.AWAITING_LOGON:
            self._disconnect("gateway shutting down")

    def logon_refusal(self, text: str, now: float) -> bytes:
        """A Logout refusing a Logon that never reached this session (the driver refused it
        before attaching the connection, e.g. during a failed-logon back-off): framed with the
        next MsgSeqNum, neither stored nor counted; nothing in the session changes."""
        key = self.key
        header = [(34, str(self.store.next_sender)), (49, key.our_comp_id),
                  (52, codec.utc_timestamp(now)), (56, key.their_comp_id)]
        return codec.encode(header, [(58, text)], "5", key.begin_string)

    @property
    def resend_pending(self) -> bool:
        return self._resending is not None

    def continue_resend(self, now: float) -> None:
        """Produce the next chunk of a ResendRequest's answer (see the module docstring)."""
        self._now = now
        if self._resending is not None:
            self._resend_chunk()

    @property
    def holds_application_messages(self) -> bool:
        """An application message (new or resent) is among what data_to_send() returns next
        or later: the driver makes such output wait until the engine state it reports is
        durable; session-level messages alone (heartbeats, rejects, logouts) need not."""
        return self._app_out

    def data_to_send(self) -> bytes:
        self.store.flush()
        if self._resend_out is not None:          # resending: only the resend goes out yet
            data = b"".join(self._resend_out)
            self._resend_out.clear()
            return data
        self._app_out = False
        if not self._out:
            return b""
        data = b"".join(self._out)
        self._out.clear()
        return data

    # ------------------------------------------------------------------ state machine
    def _event(self, event: Event) -> None:
        nxt = TRANSITIONS.get((self.state, event))
        if nxt is None:
            raise LocalProtocolError("event %s not allowed in state %s" % (event.value, self.state.value))
        self.state = nxt

    def _disconnect(self, reason: str) -> None:
        if self.state in (S.DISCONNECTED, S.CLOSING):
            return
        was_logged_on = self.logged_on
        log.info("%s: disconnecting: %s", self._name(), reason)
        self.close_reason = reason
        self._event(Event.DISCONNECT)
        self._queue.clear()
        self._resend_range = None
        self._end_resend()
        if was_logged_on:
            self._route(self.application.on_logout(self.key))

    def _name(self) -> str:
        return "%s->%s" % (self.key.our_comp_id, self.key.their_comp_id)

    # ------------------------------------------------------------------ incoming
    def _next_frame(self, raw: bytes) -> None:
        try:
            fields = codec.parse(raw)
        except codec.GarbledMessage as e:
            log.info("%s: garbled message ignored (%s): %s", self._name(), e, codec.pretty(raw)[:200])
            if self.state is S.AWAITING_LOGON:
                self._disconnect("garbled message before logon")
            return
        self._next_message(fields, queued=False)

    def _next_message(self, fields: list[tuple[int, str]], queued: bool) -> None:
        if self.state is S.CLOSING:
            return
        msg = FixMessage(fields)
        msg_type = fields[2][1]
        tags = tuple([f[0] for f in fields])
        try:
            for tag in (49, 56):
                if tag not in tags:
                    raise SessionReject(Reason.REQUIRED_TAG_MISSING, tag)
            if fields[0][1] != self.key.begin_string:
                raise _UnsupportedVersion()
            dictionary.check(fields, tags)
            handler = self._HANDLERS.get(msg_type, Session._on_application)
            handler(self, msg)
        except SessionReject as e:
            self._reject(msg, e.reason, e.tag, e.text)
        except _UnsupportedVersion:
            if msg_type == "5":
                self._on_logout(msg)
            elif self.logged_on:
                self._send_logout("Incorrect BeginString")
                self.store.next_target += 1
            else:
                self._disconnect("Incorrect BeginString")
        if not queued:
            self._next_queued()

    def _next_queued(self) -> None:
        queue = self._queue
        while queue and self.state is not S.CLOSING:
            fields = queue.pop(self.store.next_target, None)
            if fields is None:
                for seq in [s for s in queue if s < self.store.next_target]:
                    del queue[seq]
                return
            if fields[2][1] in ("A", "2"):
                self.store.next_target += 1
            else:
                self._next_message(fields, queued=True)

    def _verify(self, msg: FixMessage, check_high: bool = True, check_low: bool = True) -> bool:
        msg_type = msg.msg_type
        if not self._valid_logon_state(msg_type):
            self._disconnect("Logon state is not valid for message %s" % msg_type)
            return False
        header = dict(msg.fields)      # validated: no header tag appears twice
        sending_time = codec.parse_utc_timestamp(header.get(52, ""))
        if sending_time is None or abs(self._now - sending_time) > MAX_LATENCY:
            self._reject(msg, Reason.SENDINGTIME_ACCURACY_PROBLEM)
            if self.logged_on:
                self._send_logout()
            return False
        if header.get(49) != self.key.their_comp_id or header.get(56) != self.key.our_comp_id:
            self._reject(msg, Reason.COMPID_PROBLEM)
            if self.logged_on:
                self._send_logout()
            return False
        for tag in _SEQ_NUM_TAGS:
            value = header.get(tag)
            if value is not None and int(value) > MAX_SEQ_NUM:
                self._reject(msg, Reason.VALUE_IS_INCORRECT, tag,
                             "sequence number above %d" % MAX_SEQ_NUM)
                return False
        seq = int(header[34])
        expected = self.store.next_target
        if check_high and seq > expected:
            self._target_too_high(msg, seq)
            return False
        if check_low and seq < expected:
            self._target_too_low(msg, seq)
            return False
        if (check_high or check_low) and self._resend_range and seq >= self._resend_range[1]:
            self._resend_range = None
        self._last_received = self._now
        self._test_requests = 0
        return True

    def _valid_logon_state(self, msg_type: str) -> bool:
        if self._received_reset:
            return True
        if msg_type == "A":
            return not self.logged_on
        return self.logged_on

    def _target_too_high(self, msg: FixMessage, seq: int) -> None:
        if len(self._queue) >= MAX_QUEUED:
            self._send_logout("Too many messages ahead of sequence")
            self._disconnect("queue of out-of-sequence messages full")
            return
        self._queue[seq] = msg.fields
        if self._resend_range and seq >= self._resend_range[0]:
            return                          # already asked; one ResendRequest at a time
        begin = self.store.next_target
        self._resend_range = (begin, seq - 1)
        self._send_admin("2", [(7, str(begin)), (16, "0")])

    def _target_too_low(self, msg: FixMessage, seq: int) -> None:
        if msg.get(43) != "Y":
            text = "MsgSeqNum too low, expecting %d but received %d" % (self.store.next_target, seq)
            self._send_logout(text)
            self._disconnect(text)
            return
        if msg.msg_type == "4":
            return
        orig = msg.get(122)
        if orig is None:
            self._reject(msg, Reason.REQUIRED_TAG_MISSING, 122)
            return
        orig_time = codec.parse_utc_timestamp(orig)
        sending_time = codec.parse_utc_timestamp(msg.get(52, ""))
        if orig_time is None or sending_time is None or orig_time > sending_time:
            self._reject(msg, Reason.SENDINGTIME_ACCURACY_PROBLEM)
            self._send_logout()
        # otherwise a duplicate we already processed: ignore it

    # ------------------------------------------------------------------ message handlers
    def _on_logon(self, msg: FixMessage) -> None:
        # Nothing of the session changes until the Logon is accepted: a stranger's Logon (wrong
        # password, with ResetSeqNumFlag or not) must not reset the sequence numbers nor drop
        # the messages stored for the broker while it was away. So: the header checks, then
        # HeartBtInt and the password, and only then the reset and the sequence number checks.
        received_reset = msg.get(141) == "Y"
        self._received_reset = received_reset
        try:
            if not self._verify(msg, check_high=False, check_low=False):
                return
            raw = msg.get(108) or ""
            # ASCII digits only (int() also reads "３０" and " 30"); anything else is refused
            # with the bounds, as an out-of-range interval is
            heartbeat = int(raw) if raw.isascii() and raw.isdigit() else -1
            low, high = self.heartbeat_bounds
            if not low <= heartbeat <= high:
                text = "HeartBtInt (108) must be %d to %d seconds" % (low, high)
                if self.state is S.AWAITING_LOGON:
                    self._refuse_logon(text)
                    return
                raise SessionReject(Reason.VALUE_IS_INCORRECT, 108, text)
            if self.authenticate is not None and self.state is S.AWAITING_LOGON:
                refusal = self.authenticate(self.key, msg)
                if refusal:
                    self._refuse_logon(refusal)
                    return
            if received_reset or self.reset_on_logon:
                self._reset()
            seq = int(msg.get(34))
            if seq < self.store.next_target:
                self._target_too_low(msg, seq)
                return
            self._hb = heartbeat
            self._event(Event.LOGON)
            body = [(98, "0"), (108, str(heartbeat))]
            if received_reset:
                body.append((141, "Y"))
            self._send_admin("A", body)
        finally:
            self._received_reset = False
        seq = int(msg.get(34))
        if seq > self.store.next_target and not received_reset:
            self._target_too_high(msg, seq)
        else:
            self.store.next_target += 1
        log.info("%s: logged on (HeartBtInt %d, next in %d, next out %d)", self._name(),
                 self._hb, self.store.next_target, self.store.next_sender)
        # Last, so what the application sends at logon (the exchange's TradingSessionStatus)
        # follows the Logon reply and any ResendRequest: FIX wants the Logon answered first.
        self._route(self.application.on_logon(self.key))

    def _on_heartbeat(self, msg: FixMessage) -> None:
        if self._verify(msg):
            self.store.next_target += 1

    def _on_test_request(self, msg: FixMessage) -> None:
        if self._verify(msg):
            self._send_admin("0", [(112, msg.get(112))])
            self.store.next_target += 1

    def _on_reject(self, msg: FixMessage) -> None:
        if self._verify(msg):
            self.store.next_target += 1

    def _on_sequence_reset(self, msg: FixMessage) -> None:
        gap_fill = msg.get(123) == "Y"
        if not self._verify(msg, gap_fill, gap_fill):
            return
        new_seq = int(msg.get(36))
        if new_seq > self.store.next_target:
            self.store.next_target = new_seq
        elif new_seq < self.store.next_target:
            self._reject(msg, Reason.VALUE_IS_INCORRECT)

    def _on_logout(self, msg: FixMessage) -> None:
        if not self._verify(msg, False, False):
            return
        if self.state is not S.LOGOUT_SENT:
            self._send_logout()
        self.store.next_target += 1
        self._disconnect("logout")

    def _on_resend_request(self, msg: FixMessage) -> None:
        if not self._verify(msg, False, False):
            return
        begin, end = int(msg.get(7)), int(msg.get(16))
        next_sender = self.store.next_sender
        if end == 0 or end >= next_sender:
            end = next_sender - 1
        log.info("%s: resending %d..%d", self._name(), begin, end)
        if self._resend_out is None:
            # what is already queued goes first; what is sent from now on waits for the resend
            self._resend_out, self._out = self._out, []
        self._resending = _Resend(begin, end, next_sender)
        seq = int(msg.get(34))
        if seq == self.store.next_target:
            self.store.next_target += 1
        self._resend_chunk()

    def _resend_chunk(self) -> None:
        """Resend the next resend_chunk stored messages (all of them when it is None)."""
        r = self._resending
        chunk_end = r.end if self.resend_chunk is None else min(r.end, r.cursor + self.resend_chunk - 1)
        for seq, raw in self.store.get(r.cursor, chunk_end):
            if r.current != seq and not r.gap_begin:
                r.gap_begin = r.current
            fields = codec.split_fields(raw)
            if fields[2][1] in dictionary.ADMIN_MSG_TYPES:
                if not r.gap_begin:
                    r.gap_begin = seq
            else:
                if r.gap_begin:
                    self._gap_fill(r.gap_begin, seq)
                    r.gap_begin = 0
                self._resend(fields)
            r.current = seq + 1
            r.last = seq
        r.cursor = chunk_end + 1
        if r.cursor <= r.end:
            return
        if r.gap_begin:
            self._gap_fill(r.gap_begin, r.last + 1)
        if r.end > r.last:
            self._gap_fill(r.begin, min(r.end + 1, r.next_sender))
        self._end_resend()

    def _end_resend(self) -> None:
        """The resend is complete (or abandoned): release what was held back behind it."""
        self._resending = None
        if self._resend_out is not None:
            self._resend_out.extend(self._out)
            self._out, self._resend_out = self._resend_out, None

    def _on_application(self, msg: FixMessage) -> None:
        if not self._verify(msg):
            return
        try:
            outbound = self.application.on_message(self.key, msg)
        except SessionReject:
            raise
        except Exception:                                   # a bug behind us; keep the session
            log.exception("%s: application failed on %r", self._name(), msg)
            self._send_admin("j", [(45, msg.get(34)), (58, "Application error"),
                                   (372, msg.msg_type), (380, "4")])
            self.store.next_target += 1
            return
        self._route(outbound)
        self.store.next_target += 1

    _HANDLERS = {
        "A": _on_logon, "0": _on_heartbeat, "1": _on_test_request, "2": _on_resend_request,
        "3": _on_reject, "4": _on_sequence_reset, "5": _on_logout,
    }

    # ------------------------------------------------------------------ outgoing
    def _reject(self, msg: FixMessage, reason: Reason, tag: Optional[int] = None,
                text: Optional[str] = None) -> None:
        """The one place where a protocol problem becomes a Reject (3)."""
        if not self.logged_on:
            if msg.msg_type == "A" and tag == 108 and self.state is S.AWAITING_LOGON:
                low, high = self.heartbeat_bounds   # a HeartBtInt that is no number: say so
                self._refuse_logon("HeartBtInt (108) must be %d to %d seconds" % (low, high))
                return
            self._disconnect("rejected before logon: %s" % (text or dictionary.REASON_TEXT.get(reason)))
            return
        seq_text = msg.get(34)
        msg_type = msg.msg_type
        body = []
        if seq_text:
            body.append((45, seq_text))
        text = text or dictionary.REASON_TEXT.get(reason)
        if text:
            body.append((58, text))
        if tag is not None:
            body.append((371, str(tag)))
        if msg_type:
            body.append((372, msg_type))
        body.append((373, str(int(reason))))
        header = []
        for src, dst in _ROUTE_REVERSAL:
            value = msg.get(src)
            if value:
                header.append((dst, value))
        if msg_type not in ("A", "4") and _as_int(seq_text) == self.store.next_target:
            self.store.next_target += 1
        log.info("%s: reject %s: %s (tag %s)", self._name(), seq_text, text, tag)
        self._send_raw("3", header, body)

    def _refuse_logon(self, text: str) -> None:
        """Logout with the reason and hang up, and nothing else: whoever sent the Logon has not
        shown to be the broker, so it leaves no trace in the session (no sequence number is
        used, nothing is stored; the broker's next Logon reply carries the same MsgSeqNum)."""
        self._out.append(self.logon_refusal(text, self._now))
        self._disconnect("logon refused: %s" % text)

    def _send_logout(self, text: Optional[str] = None) -> None:
        self._send_admin("5", [(58, text)] if text else [])
        if self.state is S.LOGGED_ON:
            self._event(Event.SEND_LOGOUT)
            self._logout_sent_at = self._now

    def _send_admin(self, msg_type: str, body: list[tuple[int, str]]) -> None:
        self._send_raw(msg_type, [], body)

    def _send_raw(self, msg_type: str, header: list[tuple[int, str]], body: list[tuple[int, str]],
                  app: bool = False) -> int:
        store = self.store
        seq = store.next_sender
        key = self.key
        if header:
            full_header = [(34, str(seq)), (49, key.our_comp_id),
                           (52, codec.utc_timestamp(self._now)), (56, key.their_comp_id)]
            full_header += header
            full_header.sort(key=lambda f: f[0])
            raw = codec.encode(full_header, body, msg_type, key.begin_string)
        else:   # the standard header alone
            return self._send_text(msg_type, "".join([f"{tag}={value}\x01" for tag, value in body]),
                                   app)
        self._store_and_send(seq, raw, app)
        return seq

    def _send_text(self, msg_type: str, body: str, app: bool) -> int:
        """A message with the standard header alone (34, 49, 52, 56 from precomputed parts) and
        `body`, its fields already encoded."""
        seq = self.store.next_sender
        raw = codec.frame_bytes(self._begin, "35=%s\x0134=%d%s%s%s%s" % (
            msg_type, seq, self._header_49_52, codec.utc_timestamp(self._now),
            self._header_56, body))
        self._store_and_send(seq, raw, app)
        return seq

    def _store_and_send(self, seq: int, raw: bytes, app: bool) -> None:
        store = self.store
        store.set(seq, raw)
        store.next_sender = seq + 1
        state = self.state
        if state in LOGGED_ON_STATES or (not app and state is S.AWAITING_LOGON):
            self._out.append(raw)
            self._last_sent = self._now
            if app:
                self._app_out = True

    def _gap_fill(self, begin: int, new_seq: int) -> None:
        now = codec.utc_timestamp(self._now)
        key = self.key
        header = [(34, str(begin)), (43, "Y"), (49, key.our_comp_id), (52, now),
                  (56, key.their_comp_id), (122, now)]
        self._resend_out.append(codec.encode(header, [(36, str(new_seq)), (123, "Y")], "4",
                                             key.begin_string))
        self._last_sent = self._now

    def _resend(self, fields: list[tuple[int, str]]) -> None:
        header, body = [], []
        orig_time = None
        for tag, value in fields[3:-1]:
            if tag in HEADER_TAGS:
                if tag == 52:
                    orig_time = value
                elif tag not in (43, 122):
                    header.append((tag, value))
            elif tag not in TRAILER_TAGS:
                body.append((tag, value))
        header += [(43, "Y"), (52, codec.utc_timestamp(self._now)), (122, orig_time or "")]
        header.sort(key=lambda f: f[0])
        self._resend_out.append(codec.encode(header, body, fields[2][1], self.key.begin_string))
        self._last_sent = self._now
        self._app_out = True

    def _reset(self) -> None:
        self._end_resend()
        self.store.reset()
        self._queue.clear()
        self._resend_range = None

    def _route(self, outbound: list[Outbound]) -> None:
        if not outbound:
            return
        others = []
        for key, message in outbound:
            if key == self.key:
                self.send(message, self._now)
            else:
                others.append((key, message))
        if others:
            if self.router is None:
                raise LocalProtocolError("no router for messages to other sessions: %r" % others)
            self.router(others)
