"""The five-minute tour's broker: two brokers log on to `ccerx serve` (its demo config) and
trade 100 t of afforestation credits with each other.

    python samples/tour_broker.py [--port 9878] [--tls-ca FILE]

BROKER01 buys for its emitter EMIT01 at 62.00, BROKER02 sells from its project owner HOLD02 at
62.00; each prints every message the exchange sends it, one line each (tag=value, `|` for SOH).
The broker side is simplefix (installed with `pip install -e ".[dev]"`), not our own codec.
"""
from __future__ import annotations

import argparse
import socket
import ssl
import sys
import time

import simplefix

TYPES = {"A": "Logon", "h": "TradingSessionStatus", "8": "ExecutionReport", "5": "Logout",
         "0": "Heartbeat", "3": "Reject", "j": "BusinessMessageReject"}
EXEC_TYPES = {"0": "new", "F": "trade", "4": "canceled", "8": "rejected", "C": "expired"}


class Broker:
    def __init__(self, comp_id: str, password: str, port: int, tls_ca: str | None):
        self.comp_id, self.seq = comp_id, 1
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if tls_ca:
            self.sock = ssl.create_default_context(cafile=tls_ca).wrap_socket(
                self.sock, server_hostname="localhost")
        self.parser = simplefix.FixParser()
        # 141=Y starts both sides' sequence numbers at 1: fine for a tour; a production broker
        # keeps its sequence numbers and recovers what it missed by ResendRequest
        self.send("A", (98, 0), (108, 30), (141, "Y"), (553, comp_id), (554, password))
        self.expect("A")

    def send(self, msg_type: str, *body) -> None:
        m = simplefix.FixMessage()
        for tag, value in ((8, "FIX.4.4"), (35, msg_type), (49, self.comp_id), (56, "CCERX"),
                           (34, self.seq)):
            m.append_pair(tag, value, header=True)
        m.append_utc_timestamp(52, precision=3, header=True)
        for tag, value in body:
            m.append_pair(tag, value)
        self.sock.sendall(m.encode())
        self.seq += 1

    def read(self) -> simplefix.FixMessage:
        while (msg := self.parser.get_message()) is None:
            data = self.sock.recv(65536)
            if not data:
                sys.exit(f"{self.comp_id}: the exchange closed the connection")
            self.parser.append_buffer(data)
        msg_type = msg.get(35).decode()
        what = TYPES.get(msg_type, msg_type)
        if msg_type == "8":
            what += f" {EXEC_TYPES.get(msg.get(150).decode(), msg.get(150).decode())}"
        fields = "|".join(f"{t}={v.decode()}" for t, v in msg if t not in (8, 9, 10, 49, 56, 52))
        print(f"{self.comp_id} <- {what}: {fields}")
        return msg

    def expect(self, msg_type: str, exec_type: str | None = None) -> simplefix.FixMessage:
        """Read (and print) messages until one of this type (and ExecType) arrives."""
        while True:
            msg = self.read()
            if msg.get(35).decode() == msg_type and (
                    exec_type is None or msg.get(150).decode() == exec_type):
                return msg

    def order(self, cl_ord_id: str, account: str, side: str, qty: int, price: str) -> None:
        self.send("D", (11, cl_ord_id), (1, account), (55, "CCER-AFF"), (54, side),
                  (60, time.strftime("%Y%m%d-%H:%M:%S.000", time.gmtime())), (38, qty),
                  (40, 2), (44, price), (59, 0))

    def logout(self) -> None:
        self.send("5")
        self.expect("5")
        self.sock.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=9878)
    p.add_argument("--tls-ca", metavar="FILE", help="the exchange's CA certificate, for TLS")
    args = p.parse_args(argv)
    buyer = Broker("BROKER01", "demo01", args.port, args.tls_ca)
    seller = Broker("BROKER02", "demo02", args.port, args.tls_ca)
    tag = time.strftime("%H%M%S")
    buyer.order(f"buy-{tag}", "EMIT01", "1", 100, "62.00")
    buyer.expect("8", "0")                              # acknowledged: resting on the book
    seller.order(f"sell-{tag}", "HOLD02", "2", 100, "62.00")
    trade = seller.expect("8", "F")                     # the seller's fill ...
    buyer.expect("8", "F")                              # ... and the buyer's
    print(f"traded {trade.get(32).decode()} t of CCER-AFF at {trade.get(31).decode()} CNY/t")
    buyer.logout()
    seller.logout()
    return 0


if __name__ == "__main__":
    sys.exit(main())
