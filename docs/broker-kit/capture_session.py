"""Capture a real FIX session with `ccerx serve`: the raw messages behind session-log.md.

    python docs/broker-kit/capture_session.py              # starts its own `ccerx serve`
    python docs/broker-kit/capture_session.py --port 9878  # a running one, fresh --data-dir

BROKER01 logs on, is told the trading session status, buys 15 t of CCER-AFF at 62.00 against
10 t that BROKER02 offers (BROKER02's messages are not shown), is filled 10 t, cancels the
other 5 t, sends an order for an account that is not its own (rejected), and logs out.
Every message BROKER01 sends or receives is printed on one line, in the order it went over
the wire: "-> " sent by the broker, "<- " sent by the gateway, SOH shown as "|". The
password's value is shown as *** (BodyLength and CheckSum are those of the real frame).

The broker side is simplefix over a plain socket, as in the test suite: independent of the
gateway's own codec. tests/integration/test_broker_kit.py runs this script and validates its
output against FIX44-CCERX.xml.
"""
from __future__ import annotations

import argparse
import re
import select
import socket
import subprocess
import sys
import tempfile
import time

import simplefix

GATEWAY = "CCERX"
TIMEOUT = 10.0


class Client:
    """A FIX 4.4 initiator reduced to what this scenario needs; optionally logs its traffic."""

    def __init__(self, comp_id: str, port: int, log=None):
        self.comp_id, self.log = comp_id, log
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.parser = simplefix.FixParser()
        self.next_out = 1

    def send(self, msg_type: str, *fields) -> None:
        message = simplefix.FixMessage()
        for tag, value in ((8, "FIX.4.4"), (35, msg_type), (49, self.comp_id), (56, GATEWAY),
                           (34, self.next_out)):
            message.append_pair(tag, value, header=True)
        message.append_utc_timestamp(52, precision=3, header=True)
        for tag, value in fields:
            message.append_pair(tag, value)
        raw = message.encode()
        self.next_out += 1
        self._log("-> ", raw)
        self.sock.sendall(raw)

    def expect(self, msg_type: str, where=None) -> simplefix.FixMessage:
        deadline = time.monotonic() + TIMEOUT
        while True:
            message = self.parser.get_message()
            if message is not None:
                self._log("<- ", message.encode(raw=True))
                if _get(message, 35) == msg_type and (where is None or where(message)):
                    return message
                continue
            if not select.select([self.sock], [], [], max(deadline - time.monotonic(), 0))[0]:
                raise TimeoutError(f"{self.comp_id}: no {msg_type} within {TIMEOUT} s")
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"{self.comp_id}: connection closed waiting for {msg_type}")
            self.parser.append_buffer(data)

    def _log(self, arrow: str, raw: bytes) -> None:
        if self.log is not None:
            text = re.sub(rb"(?<=\x01554=)[^\x01]*", b"***", raw).decode("utf-8", "replace")
            self.log.write(arrow + text.replace("\x01", "|") + "\n")


def _get(message, tag: int):
    value = message.get(tag)
    return None if value is None else value.decode()


def _now() -> str:
    return time.strftime("%Y%m%d-%H:%M:%S", time.gmtime()) + ".000"


def logon(client: Client, password: str) -> None:
    client.send("A", (98, 0), (108, 30), (553, client.comp_id), (554, password))
    client.expect("A")
    client.expect("h")      # TradingSessionStatus follows every Logon


def order(client: Client, cl_ord_id: str, account: str, side: str, qty: int, price: str):
    client.send("D", (11, cl_ord_id), (1, account), (55, "CCER-AFF"), (54, side), (60, _now()),
                (38, qty), (40, "2"), (44, price), (59, "0"))


def scenario(port: int, out, password: str = "demo01", counterparty_password: str = "demo02") -> None:
    seller = Client("BROKER02", port)                # the counterparty, not logged
    logon(seller, counterparty_password)
    order(seller, "S-1", "HOLD02", "2", 10, "62.00")
    seller.expect("8")

    broker = Client("BROKER01", port, log=out)
    logon(broker, password)
    order(broker, "ORD-1", "EMIT01", "1", 15, "62.00")
    broker.expect("8", where=lambda m: _get(m, 150) == "F")
    broker.send("F", (41, "ORD-1"), (11, "ORD-1-CXL"), (55, "CCER-AFF"), (54, "1"), (60, _now()))
    broker.expect("8", where=lambda m: _get(m, 150) == "4")
    order(broker, "ORD-2", "HOLD02", "1", 5, "62.00")   # BROKER02's account: refused
    broker.expect("8", where=lambda m: _get(m, 150) == "8")
    broker.send("5")
    broker.expect("5")
    seller.send("5")
    seller.expect("5")


def _start_serve(data_dir: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-m", "ccerx.scripts.ccerx", "serve", "--port", "0",
                             "--data-dir", data_dir], stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        found = re.search(r"listening on [\d.]+:(\d+)", line)
        if found:
            return proc, int(found.group(1))
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit("ccerx serve did not start")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, help="a running `ccerx serve` (default: start one)")
    args = parser.parse_args(argv)
    if args.port is not None:
        scenario(args.port, sys.stdout)
        return 0
    with tempfile.TemporaryDirectory() as data_dir:
        proc, port = _start_serve(data_dir)
        try:
            scenario(port, sys.stdout)
        finally:
            proc.terminate()
            proc.wait(15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
