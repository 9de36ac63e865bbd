"""`ccerx operator`: operator commands to a running `ccerx serve` over its control socket.

    ccerx operator eod                         # close the trading day now
    ccerx operator halt ["reason"]             # close continuous trading (orders: market_closed)
    ccerx operator resume ["note"]             # open it again
    ccerx operator deposit HOLD01 CCER-SOL 50000 --id ISS-2026-001    # credits, whole tonnes
    ccerx operator deposit EMIT01 CNY 1000000.00 --id F-2026-001      # cash, decimal CNY
    ccerx operator send REQUESTS.ndjson        # raw request lines (- for stdin)

Prints each response as one JSON line. Exit status: 0 every request applied, 1 one or more
refused or rejected, 2 the control socket could not be reached (or went away) or the
arguments are wrong.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import orjson

from ccerx.engine.core.types import CASH_ASSET
from ccerx.gateway.control import SOCKET_NAME, ControlUnavailable, operator_request_sync


def add_parser(sub) -> None:
    p = sub.add_parser(
        "operator", help="send operator commands (close the day, halt, resume, deposit) to "
                         "ccerx serve",
        description="Send operator commands to a running `ccerx serve` over its control socket "
                    "(a Unix-domain socket; only its owner may use it) and print each response "
                    "as a JSON line. Exit status 0 if all were applied, 1 if any was refused or "
                    "rejected, 2 if the socket cannot be reached.")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--control", metavar="PATH",
                       help="the control socket (as given to `ccerx serve --control`)")
    where.add_argument("--data-dir", metavar="DIR", default="data",
                       help=f"the server's data directory: its socket is DIR/{SOCKET_NAME} "
                            "(default ./data)")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    actions.add_parser("eod", help="close the trading day now: day orders expire, the VWAP "
                                   "close becomes the next reference price")
    halt = actions.add_parser("halt", help="close continuous trading (new orders and amends are "
                                           "rejected market_closed; cancels work)")
    halt.add_argument("note", nargs="?", default="halted by the operator",
                      help="told to the brokers (TradingSessionStatus Text)")
    resume = actions.add_parser("resume", help="open continuous trading again")
    resume.add_argument("note", nargs="?", default="resumed by the operator",
                        help="told to the brokers (TradingSessionStatus Text)")
    deposit = actions.add_parser(
        "deposit", help="credit an account: credits issued to it (ASSET a credit type, AMOUNT "
                        "whole tonnes) or cash paid in (ASSET CNY, AMOUNT decimal CNY)")
    deposit.add_argument("account", metavar="ACCOUNT")
    deposit.add_argument("asset", metavar="ASSET", help="a credit type (e.g. CCER-SOL) or CNY")
    deposit.add_argument("amount", metavar="AMOUNT",
                         help="whole tonnes, or for CNY a decimal string such as 1000000.00")
    deposit.add_argument("--id", dest="deposit_id", metavar="ID",
                         help="your reference, unique for ever: a repeated id is rejected, so "
                              "a retried deposit never credits twice (default DEP-<time ns>; "
                              "give your own to retry safely)")
    actions.add_parser("state", help="show the market's state: trading open or not, the last "
                                     "close, per credit type the reference price and band, best "
                                     "bid and ask, resting orders, today's volume (read-only)")
    actions.add_parser("accounts", help="show every account: cash, credits, reservations, "
                                        "credits bought today, fees paid (read-only)")
    send = actions.add_parser("send", help="send raw NDJSON request lines from a file")
    send.add_argument("file", metavar="FILE", help="one request per line; - reads stdin")
    p.set_defaults(run=run)


def requests_for(args) -> list:
    """The request lines an action stands for (dicts, or raw lines for `send`)."""
    if args.action in ("eod", "state", "accounts"):
        return [{"op": args.action}]
    if args.action == "halt":
        return [{"op": "status", "open": False, "halt": True, "note": args.note}]
    if args.action == "resume":
        return [{"op": "status", "open": True, "note": args.note}]
    if args.action == "deposit":
        request = {"op": "deposit", "deposit_id": args.deposit_id or f"DEP-{time.time_ns()}",
                   "account": args.account}
        if args.asset == CASH_ASSET:
            request["cash"] = args.amount
        elif args.amount.isascii() and args.amount.isdigit():
            request["instrument"], request["qty"] = args.asset, int(args.amount)
        else:
            raise _Usage(f"deposit: AMOUNT of {args.asset} must be whole tonnes, not "
                         f"{args.amount!r}")
        return [request]
    if args.action == "send":
        data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
        return [line for line in data.splitlines() if line.strip()]
    raise AssertionError(args.action)


class _Usage(ValueError):
    pass


def run(args) -> int:
    path = Path(args.control) if args.control else Path(args.data_dir) / SOCKET_NAME
    try:
        requests = requests_for(args)
    except _Usage as err:
        print(f"ccerx operator: {err}", file=sys.stderr)
        return 2
    if not requests:
        return 0
    try:
        responses = operator_request_sync(path, requests)
    except ControlUnavailable as err:
        _print(err.responses)
        print(f"ccerx operator: {err}", file=sys.stderr)
        return 2
    _print(responses)
    return 0 if all(r.get("ok") is True for r in responses) else 1


def _print(responses) -> None:
    for response in responses:
        sys.stdout.write(orjson.dumps(response).decode() + "\n")
    sys.stdout.flush()
