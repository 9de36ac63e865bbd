"""`ccerx operator`: operator commands to a running `ccerx serve` over its control socket.

    ccerx operator eod                         # close the trading day now
    ccerx operator halt ["reason"]             # close continuous trading (orders: market_closed)
    ccerx operator resume ["note"]             # open it again
    ccerx operator send REQUESTS.ndjson        # raw request lines (- for stdin)

Prints each response as one JSON line. Exit status: 0 every request applied, 1 one or more
refused or rejected, 2 the control socket could not be reached (or went away).
"""
from __future__ import annotations

import sys
from pathlib import Path

import orjson

from gateway.control import SOCKET_NAME, ControlUnavailable, operator_request_sync


def add_parser(sub) -> None:
    p = sub.add_parser(
        "operator", help="send operator commands (close the day, halt, resume) to ccerx serve",
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
    send = actions.add_parser("send", help="send raw NDJSON request lines from a file")
    send.add_argument("file", metavar="FILE", help="one request per line; - reads stdin")
    p.set_defaults(run=run)


def requests_for(args) -> list:
    """The request lines an action stands for (dicts, or raw lines for `send`)."""
    if args.action == "eod":
        return [{"op": "eod"}]
    if args.action in ("halt", "resume"):
        return [{"op": "status", "open": args.action == "resume", "note": args.note}]
    if args.action == "send":
        data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
        return [line for line in data.splitlines() if line.strip()]
    raise AssertionError(args.action)


def run(args) -> int:
    path = Path(args.control) if args.control else Path(args.data_dir) / SOCKET_NAME
    requests = requests_for(args)
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
