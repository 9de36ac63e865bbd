"""The one FIX test client: a broker's initiator built on simplefix over a plain socket (or
TLS, given an ssl.SSLContext).

The broker side is deliberately independent of our codec: messages are built, framed,
checksummed and parsed by simplefix. Tests import it from here (never from another test
module); `tests/conftest.py` starts the `ccerx serve` it talks to.
"""
from __future__ import annotations

import select
import socket
import ssl
import time

import simplefix

GATEWAY = "CCERX"
TIMEOUT = 5.0


# ------------------------------------------------------------------ a broker's FIX client
class Broker:
    """A minimal FIX 4.4 initiator: simplefix for encoding and parsing, a blocking socket.

    It keeps its sequence numbers across connections (as a real FIX engine does), answers
    TestRequest and ResendRequest (with a gap fill: it never resends orders), and records
    every message it receives in `received`.
    """

    def __init__(self, comp_id: str, port: int, tls: ssl.SSLContext | None = None):
        self.comp_id, self.port, self.tls = comp_id, port, tls
        self.next_out, self.next_in = 1, 1
        self.sock: socket.socket | None = None
        self.parser = simplefix.FixParser()
        self.received: list[simplefix.FixMessage] = []
        self.gaps: list[tuple[int, int]] = []    # (expected, received) sequence gaps seen
        self.logging_out = False

    # -------------------------------------------------------------- connection
    def connect(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT)
        if self.tls is not None:
            self.sock = self.tls.wrap_socket(self.sock, server_hostname="127.0.0.1")
        self.parser = simplefix.FixParser()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def logon(self, password: str, reset: bool = False, heartbeat: int = 30):
        self.connect()
        if reset:
            self.next_out = self.next_in = 1
        fields = [(98, 0), (108, heartbeat)]
        if reset:
            fields.append((141, "Y"))
        fields += [(553, self.comp_id), (554, password)]
        self.send("A", *fields)
        return self.expect("A", "5")

    def logout(self) -> None:
        self.logging_out = True
        self.send("5")
        self.expect("5")
        self.close()
        self.logging_out = False

    # -------------------------------------------------------------- sending
    def send(self, msg_type: str, *fields, seq: int | None = None, poss_dup: bool = False) -> int:
        message = simplefix.FixMessage()
        message.append_pair(8, "FIX.4.4", header=True)
        message.append_pair(35, msg_type, header=True)
        message.append_pair(49, self.comp_id, header=True)
        message.append_pair(56, GATEWAY, header=True)
        number = self.next_out if seq is None else seq
        message.append_pair(34, number, header=True)
        if poss_dup:
            message.append_pair(43, "Y", header=True)
        message.append_utc_timestamp(52, precision=3, header=True)
        if poss_dup:
            message.append_utc_timestamp(122, precision=3, header=True)
        for tag, value in fields:
            message.append_pair(tag, value)
        self.sock.sendall(message.encode())
        if seq is None:
            self.next_out += 1
        return number

    def new_order(self, cl, account, side, qty, price=None, symbol="CCER-AFF", ord_type="2", tif=None):
        fields = [(11, cl), (1, account), (55, symbol), (54, side), (60, now()), (38, qty),
                  (40, ord_type)]
        if price is not None:
            fields.append((44, price))
        if tif is not None:
            fields.append((59, tif))
        return self.send("D", *fields)

    # -------------------------------------------------------------- receiving
    def read(self, timeout: float = TIMEOUT) -> simplefix.FixMessage | None:
        """The next message (admin messages answered as a FIX engine would); None on EOF."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.parser.get_message()
            if message is not None:
                self._on_message(message)
                return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.comp_id}: no message within {timeout} s")
            # TLS may hold decrypted bytes that select() cannot see
            pending = self.sock.pending() if isinstance(self.sock, ssl.SSLSocket) else 0
            ready, _, _ = ([self.sock], 0, 0) if pending else select.select(
                [self.sock], [], [], remaining)
            if not ready:
                continue
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not data:
                return None
            self.parser.append_buffer(data)

    def expect(self, *msg_types: str, where=None, timeout: float = TIMEOUT) -> simplefix.FixMessage:
        """Read until a message of one of msg_types (and matching `where`) arrives."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.read(max(deadline - time.monotonic(), 0.01))
            if message is None:
                raise ConnectionError(f"{self.comp_id}: connection closed while waiting for {msg_types}")
            if s(message, 35) in msg_types and (where is None or where(message)):
                return message

    def reports(self, count: int, where=None) -> list[simplefix.FixMessage]:
        return [self.expect("8", where=where) for _ in range(count)]

    def _on_message(self, message) -> None:
        self.received.append(message)
        msg_type, seq = s(message, 35), int(s(message, 34))
        if msg_type == "4" and s(message, 123) != "Y":
            self.next_in = int(s(message, 36))
            return
        if s(message, 43) != "Y":
            if seq > self.next_in:
                self.gaps.append((self.next_in, seq))
            self.next_in = max(self.next_in, seq + 1)
        if msg_type == "4":  # gap fill
            self.next_in = max(self.next_in, int(s(message, 36)))
        elif msg_type == "1":
            self.send("0", (112, s(message, 112)))
        elif msg_type == "5" and not self.logging_out:   # the gateway logs us out: confirm
            self.send("5")
        elif msg_type == "2":
            begin = int(s(message, 7))
            self.send("4", (123, "Y"), (36, self.next_out), seq=begin, poss_dup=True)


def sync(broker: Broker, token: str) -> None:
    """A TestRequest round trip: everything the gateway sent before is now received."""
    broker.send("1", (112, token))
    broker.expect("0", where=lambda m: s(m, 112) == token)


def s(message, tag, nth: int = 1) -> str | None:
    value = message.get(tag, nth)
    return None if value is None else value.decode()


def now() -> str:
    return time.strftime("%Y%m%d-%H:%M:%S", time.gmtime()) + ".000"


def group(message, first_tag: int) -> list[dict[int, str]]:
    entries, current = [], None
    for tag, value in message:
        if tag == first_tag:
            current = {}
            entries.append(current)
        if current is not None and tag != 10:
            current[tag] = value.decode()
    return entries


class ResendingBroker(Broker):
    """A broker whose FIX engine persists its orders: a ResendRequest from the gateway is kept
    in `resend_from` for the test to resend real messages (PossDupFlag=Y), not gap-filled."""
    resend_from = None

    def _on_message(self, message) -> None:
        if s(message, 35) == "2":
            self.received.append(message)
            self.next_in = max(self.next_in, int(s(message, 34)) + 1)
            self.resend_from = int(s(message, 7))
            return
        super()._on_message(message)
