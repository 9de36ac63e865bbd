"""The asyncio gateway over real TCP, with simplefix as the broker's codec.

A GatewayServer runs in a background thread with its own event loop; the tests are plain
blocking-socket FIX clients.
"""
from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
import simplefix

from ccerx.gateway.fix import codec
from ccerx.gateway.fix.application import FixMessage, SessionKey
from ccerx.gateway.fix.session import State
from ccerx.gateway.server import MAX_WRITE_BUFFER, GatewayServer, SessionSettings, conformance_session

B1 = SessionKey("FIX.4.4", "CCERX", "BROKER01")
B2 = SessionKey("FIX.4.4", "CCERX", "BROKER02")


class AckApp:
    """Acks each order to its sender and copies it to the other broker (cross-session routing)."""

    def on_logon(self, session):
        return []

    def on_logout(self, session):
        return []

    def on_message(self, session, message):
        other = B2 if session == B1 else B1
        ack = FixMessage.of("8", (11, message.get(11)), (150, "0"))
        copy = FixMessage.of("8", (11, message.get(11)), (150, "F"))
        return [(session, ack), (other, copy)]


def password_check(key, logon):
    return None if logon.get(554) == "pw-" + key.their_comp_id else "Invalid password"


def settings():
    app = AckApp()
    return [SessionSettings(B1, app, authenticate=password_check),
            SessionSettings(B2, app, authenticate=password_check),
            conformance_session()]


class Running:
    def __init__(self, store_dir, max_message_size=4096):
        self.server = GatewayServer("127.0.0.1", 0, settings(), store_dir=store_dir,
                                    max_message_size=max_message_size)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(self.server.start())

    def call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def in_loop(self, fn, *args):
        async def run():
            return fn(*args)
        return self.call(run())

    def stop(self):
        self.call(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def gateway(tmp_path):
    running = Running(tmp_path)
    yield running
    running.stop()


class Client:
    def __init__(self, port, sender="BROKER01", target="CCERX"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sender, self.target = sender, target
        self.seq = 1
        self.parser = simplefix.FixParser()

    def build(self, msg_type, *fields, seq=None):
        m = simplefix.FixMessage()
        m.append_pair(8, "FIX.4.4", header=True)
        m.append_pair(35, msg_type, header=True)
        if seq is None:
            seq, self.seq = self.seq, self.seq + 1
        m.append_pair(34, seq, header=True)
        m.append_pair(49, self.sender, header=True)
        m.append_utc_timestamp(52, precision=3, header=True)
        m.append_pair(56, self.target, header=True)
        for tag, value in fields:
            m.append_pair(tag, value)
        return m.encode()

    def send(self, msg_type, *fields, **kw):
        self.sock.sendall(self.build(msg_type, *fields, **kw))

    def recv(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while True:
            m = self.parser.get_message()
            if m is not None:
                return m
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed by the gateway")
            self.parser.append_buffer(data)

    def closed_by_peer(self, timeout=5.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
        except ConnectionResetError:
            return True

    def logon(self, password=None, **kw):
        fields = [(98, 0), (108, 30)]
        if password is not None:
            fields += [(553, self.sender), (554, password)]
        self.send("A", *fields, **kw)
        return self.recv()

    def close(self):
        self.sock.close()


def v(m, tag):
    x = m.get(tag)
    return x.decode("latin-1") if x is not None else None


def order(client, clordid):
    client.send("D", (11, clordid), (40, 2), (44, "10.50"), (54, 1), (55, "CCER"), (38, 100),
                (60, codec.utc_timestamp(time.time())[:17]))


def test_logon_trade_route_and_logout(gateway):
    b1, b2 = Client(gateway.server.port), Client(gateway.server.port, sender="BROKER02")
    assert v(b1.logon("pw-BROKER01"), 35) == "A"
    assert v(b2.logon("pw-BROKER02"), 35) == "A"
    order(b1, "o1")
    ack = b1.recv()
    assert (v(ack, 35), v(ack, 11), v(ack, 150), v(ack, 49), v(ack, 56)) == ("8", "o1", "0", "CCERX", "BROKER01")
    copy = b2.recv()
    assert (v(copy, 11), v(copy, 150), v(copy, 56)) == ("o1", "F", "BROKER02")
    b1.send("5")
    assert v(b1.recv(), 35) == "5"
    assert b1.closed_by_peer()
    b2.close()


def test_bad_password_and_unknown_or_duplicate_sessions_are_refused(gateway):
    port = gateway.server.port
    bad = Client(port)
    reply = bad.logon("wrong")
    assert (v(reply, 35), v(reply, 58)) == ("5", "Invalid password")
    assert bad.closed_by_peer()
    stranger = Client(port, sender="NOBODY")
    stranger.send("A", (98, 0), (108, 30))
    assert stranger.closed_by_peer()
    first = Client(port)
    assert v(first.logon("pw-BROKER01"), 35) == "A"
    second = Client(port)
    second.send("A", (98, 0), (108, 30), (553, "BROKER01"), (554, "pw-BROKER01"))
    assert second.closed_by_peer()
    first.send("1", (112, "still on"))
    assert v(first.recv(), 112) == "still on"
    first.close()


def test_garbage_never_crashes_the_server(gateway):
    port = gateway.server.port
    noise = Client(port)
    noise.sock.sendall(b"GET / HTTP/1.1\r\n\r\n" + bytes(range(256)) * 4 + b"8=FIX.4.4\x019=zz\x01")
    assert noise.closed_by_peer()
    huge = Client(port)
    huge.sock.sendall(b"8=FIX.4.4\x019=99999999\x0135=A\x01")
    assert huge.closed_by_peer()
    b1 = Client(port)
    assert v(b1.logon("pw-BROKER01"), 35) == "A"
    b1.sock.sendall(b"8=FIX.4.4\x019=10\x0135=D\x01\xff\xfe=\x01\x0110=999\x01")    # garbled: ignored
    b1.send("1", (112, "after garbage"))
    hb = b1.recv()
    assert (v(hb, 35), v(hb, 112)) == ("0", "after garbage")
    b1.sock.sendall(b"8=FIX.4.4\x019=" + str(10 * 4096).encode() + b"\x01")         # over the size limit
    assert b1.closed_by_peer()
    b2 = Client(port, sender="BROKER02")
    assert v(b2.logon("pw-BROKER02"), 35) == "A"
    b2.close()


def test_a_client_that_does_not_read_cannot_grow_memory_or_stall_others(gateway):
    port = gateway.server.port
    hog = Client(port)
    hog.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    assert v(hog.logon("pw-BROKER01"), 35) == "A"
    hog.sock.settimeout(0.5)
    sent = 0
    try:
        for _ in range(20000):                 # ~20 MB of TestRequests, each answered by 1 KB
            hog.sock.sendall(hog.build("1", (112, "x" * 1000)))
            sent += 1
    except (socket.timeout, BlockingIOError):
        pass                                   # the gateway stopped reading from us: good
    other = Client(port, sender="BROKER02")
    assert v(other.logon("pw-BROKER02"), 35) == "A"
    for i in range(20):
        other.send("1", (112, "t%d" % i))
        assert v(other.recv(), 112) == "t%d" % i

    def backlog():
        conns = list(gateway.server._attached.values())
        return max(c.transport.get_write_buffer_size() for c in conns)
    assert gateway.in_loop(backlog) <= MAX_WRITE_BUFFER
    assert sent < 20000 or gateway.in_loop(lambda: len(gateway.server._attached)) == 1
    hog.close()
    other.close()


def test_missed_executions_are_recovered_after_a_gateway_restart(tmp_path):
    running = Running(tmp_path)
    b1 = Client(running.server.port)
    assert v(b1.logon("pw-BROKER01"), 35) == "A"             # in 1, out 1
    b1.send("5")                                            # in 2
    assert v(b1.recv(), 35) == "5"                          # out 2
    b1.close()
    session = running.server.sessions[B1]
    deadline = time.monotonic() + 10
    while running.in_loop(lambda: session.state) is not State.DISCONNECTED:   # the close noticed
        assert time.monotonic() < deadline, "the gateway never noticed the broker leave"
        time.sleep(0.01)
    running.in_loop(running.server.deliver, [(B1, FixMessage.of("8", (11, "while away"), (150, "F")))])
    running.stop()                                          # out 3 stored, never sent

    running = Running(tmp_path)
    try:
        b1 = Client(running.server.port)
        b1.seq = 3
        logon = b1.logon("pw-BROKER01")
        assert v(logon, 34) == "4"                          # a gap: 3 is missing
        b1.send("2", (7, 3), (16, 0))
        replay = b1.recv()
        assert (v(replay, 35), v(replay, 34), v(replay, 11), v(replay, 43)) == ("8", "3", "while away", "Y")
        assert v(replay, 122) is not None
        fill = b1.recv()                                    # our Logon (4) is admin: gap fill
        assert (v(fill, 35), v(fill, 34), v(fill, 36), v(fill, 123)) == ("4", "4", "5", "Y")
        b1.send("5")
        assert v(b1.recv(), 35) == "5"
    finally:
        running.stop()


def test_stop_logs_out_connected_brokers(tmp_path):
    running = Running(tmp_path)
    b1 = Client(running.server.port)
    assert v(b1.logon("pw-BROKER01"), 35) == "A"
    stopper = threading.Thread(target=running.stop)
    stopper.start()
    bye = b1.recv()
    assert v(bye, 35) == "5"
    b1.send("5")
    stopper.join(10)
    assert b1.closed_by_peer()


def test_conformance_session_runs_beside_broker_sessions(gateway):
    isld = Client(gateway.server.port, sender="TW44", target="ISLD")
    reply = isld.logon()
    assert (v(reply, 49), v(reply, 56)) == ("ISLD", "TW44")
    order(isld, "echo-me")
    echo = isld.recv()
    assert (v(echo, 35), v(echo, 11)) == ("D", "echo-me")
    isld.close()


def test_a_refusal_that_is_not_about_credentials_never_backs_a_broker_off(tmp_path):
    """A cluster standby refuses every Logon naming the leader (a ServiceRefusal): brokers
    moving to the new leader try each node in turn, so those refusals must not count as failed
    passwords (the back-off would then refuse them with 'too many failed logons')."""
    from ccerx.gateway.limits import ServiceRefusal
    app = AckApp()

    def standby(key, logon):
        return ServiceRefusal("this node is a standby; the leader is n2 at 127.0.0.1:9879")
    server = GatewayServer("127.0.0.1", 0, [SessionSettings(B1, app, authenticate=standby)],
                           store_dir=tmp_path)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    try:
        for attempt in range(4):
            client = Client(server.port)
            client.send("A", (98, 0), (108, 30), (141, "Y"), (554, "pw-BROKER01"))
            answer = client.recv()
            assert v(answer, 35) == "5", attempt
            assert "leader is n2" in v(answer, 58) and "too many" not in v(answer, 58), attempt
            client.close()
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
