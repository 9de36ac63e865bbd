"""Connections that never log on cannot use up the gateway's descriptors."""
from __future__ import annotations

from tests.fixclient import Broker, s


def test_one_address_cannot_hold_every_descriptor_with_idle_connections(start_serve, tmp_path):
    """Connections that never log on are capped per source address (MAX_PENDING_PER_ADDRESS):
    past the cap they are closed at once; a broker elsewhere still logs on and trades."""
    import socket
    from ccerx.gateway.server import MAX_PENDING_PER_ADDRESS
    server = start_serve("--data-dir", str(tmp_path / "data"))
    idle = []
    try:
        for _ in range(MAX_PENDING_PER_ADDRESS + 8):
            sock = socket.create_connection(("127.0.0.1", server.port),
                                            source_address=("127.0.0.2", 0))
            idle.append(sock)
        closed_at_once = 0
        for sock in idle:
            sock.settimeout(0.5)
            try:
                if sock.recv(1) == b"":
                    closed_at_once += 1
            except ConnectionResetError:
                closed_at_once += 1
            except TimeoutError:
                pass
        assert closed_at_once >= 8, closed_at_once
        broker = Broker("BROKER01", server.port)
        assert s(broker.logon("demo01", reset=True), 35) == "A"
        broker.new_order("past-the-idlers", "EMIT01", "1", 1, "61.00")
        assert s(broker.expect("8"), 150) == "0"
        broker.close()
    finally:
        for sock in idle:
            sock.close()
