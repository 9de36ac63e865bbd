"""`ccerx operator`: operator commands to a running `ccerx serve` over its control socket.

    ccerx operator eod                         # close the trading day now
    ccerx operator halt ["reason"]             # close continuous trading (orders: market_closed)
    ccerx operator resume ["note"]             # open it again
    ccerx operator deposit HOLD01 CCER-SOL 50000 --id ISS-2026-001    # credits, whole tonnes
    ccerx operator deposit EMIT01 CNY 1000000.00 --id F-2026-001      # cash, decimal CNY
    ccerx operator deposit HOLD01 50000 --credit-type afforestation \
        --project CCER-14-2024-0001 --vintage 2023 --id ISS-7        # credits of one lot
        [--list-symbol AFF-0001-2023 --list-price 62.00]             #   (and list it, Art.17)
    ccerx operator list AFF-0001-2023 --credit-type afforestation --project CCER-14-2024-0001 \
        --vintage 2023 --price 62.00 [--name "..."]  # Art.17: list a project-vintage; its
                                               # declared price is its first benchmark; under
                                               # cbeex-2023 it trades from the next trading day
    ccerx operator retire EMIT01 100 --project CCER-14-2024-0001 --vintage 2023 \
        --purpose "2024年度清缴抵销" [--id R-1]   # retire (注销) free credits of a lot for good
                                               # (or --instrument CCER-AFF: a pooled holding)
    ccerx operator restrict EMIT01 [--side buy|sell|both]   # Art.39/46: refuse new orders
    ccerx operator restrict --member BROKER01 --side buy     #   of an account or a member
    ccerx operator unrestrict EMIT01 | --member BROKER01     # lift it (and a kill)
    ccerx operator kill EMIT01 | --member BROKER01           # cancel every open order, refuse new
    ccerx operator limits key_emission_unit=500000/1000000 [--report-pct 50]
                                               # Art.37/38 position limits (t per credit type /
                                               # total; "-" for none); no TYPE=...: lift them all
    ccerx operator dispute 17 --note "..."    # Art.32: flag a trade cleared at the close
                                               # (cbeex-2023) as disputed, before the next
                                               # trading day; shown in the statements
    ccerx operator send REQUESTS.ndjson        # raw request lines (- for stdin)

    ccerx operator state [--json]              # the market: a table (--json: one JSON line)
    ccerx operator accounts [--json]           # every account's balances: a table

Prints each response as one JSON line (`state` and `accounts`: a table unless --json). The
options --control, --data-dir and --json may come before or after the action. Exit status: 0
every request applied, 1 one or more refused or rejected, 2 the control socket could not be
reached (or went away) or the arguments are wrong.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import orjson

from ccerx.engine.core.lots import STANDARD_CONTRACTS
from ccerx.engine.core.types import CASH_ASSET
from ccerx.gateway.control import SOCKET_NAME, ControlUnavailable, operator_request_sync
from ccerx.scripts.tables import format_table, group_thousands, plural


def add_parser(sub) -> None:
    p = sub.add_parser(
        "operator", help="send operator commands (close the day, halt, resume, deposit, "
                         "list a lot, retire) to ccerx serve",
        description="Send operator commands to a running `ccerx serve` over its control socket "
                    "(a Unix-domain socket; only its owner may use it) and print each response "
                    "as a JSON line (state and accounts: a table, unless --json). Exit status 0 "
                    "if all were applied, 1 if any was refused or rejected, 2 if the socket "
                    "cannot be reached.")
    _add_common_options(p, default=None)
    p.set_defaults(control=None, data_dir=None, json=False)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    add_action = _action_adder(actions)
    add_action("eod", help="close the trading day now: day orders expire, the VWAP "
                           "close becomes the next reference price")
    halt = add_action("halt", help="close continuous trading (new orders and amends are "
                                   "rejected market_closed; cancels work)")
    halt.add_argument("note", nargs="?", default="halted by the operator",
                      help="told to the brokers (TradingSessionStatus Text)")
    resume = add_action("resume", help="open continuous trading again")
    resume.add_argument("note", nargs="?", default="resumed by the operator",
                        help="told to the brokers (TradingSessionStatus Text)")
    dispute = add_action(
        "dispute", help="record a dispute of a trade cleared at the close (cbeex-2023) "
                        "before the next trading day; shown in the statements (it does not "
                        "hold back or reverse the delivery)")
    dispute.add_argument("trade_id", metavar="TRADE_ID", type=int)
    dispute.add_argument("--note", required=True, help="why (any language)")
    deposit = add_action(
        "deposit", help="credit an account: credits of one lot moved in from the registry "
                        "(ACCOUNT QTY with --credit-type, --project and --vintage), credits "
                        "of an instrument (ASSET a symbol, AMOUNT whole tonnes) or cash paid "
                        "in (ASSET CNY, AMOUNT decimal CNY)")
    deposit.add_argument("account", metavar="ACCOUNT")
    deposit.add_argument("asset", metavar="ASSET|QTY",
                         help="an instrument (e.g. CCER-SOL) or CNY; for a lot: its QTY")
    deposit.add_argument("amount", metavar="AMOUNT", nargs="?",
                         help="whole tonnes, or for CNY a decimal string such as 1000000.00 "
                              "(none for a lot)")
    _add_lot_options(deposit, "the lot moved in")
    deposit.add_argument("--list-symbol", metavar="SYMBOL",
                         help="list the lot on its first transfer in (Art.17) under SYMBOL")
    deposit.add_argument("--list-price", metavar="PRICE",
                         help="with --list-symbol: the declared initial price (decimal CNY), "
                              "the listing's first benchmark")
    deposit.add_argument("--id", dest="deposit_id", metavar="ID",
                         help="your reference, unique for ever: a repeated id is rejected, so "
                              "a retried deposit never credits twice (default DEP-<time ns>; "
                              "give your own to retry safely)")
    listing = add_action(
        "list", help="list a project-vintage (Art.17): a new instrument that delivers exactly "
                     "that lot; its declared initial price is its first benchmark; under "
                     "cbeex-2023 it trades from the next trading day")
    listing.add_argument("symbol", metavar="SYMBOL", help="e.g. AFF-0001-2023 (printable ASCII)")
    _add_lot_options(listing, "the lot listed", required=True)
    listing.add_argument("--price", required=True, metavar="PRICE",
                         help="the declared initial price, decimal CNY (e.g. 62.00)")
    listing.add_argument("--name", help="a name shown to brokers (any language)")
    listing.add_argument("--tick", help="price tick, decimal CNY (default 0.01)")
    retire = add_action(
        "retire", help="retire (注销) free credits of an account for good (not reserved by an "
                       "order, not bought today) for a stated purpose; the answer holds the "
                       "retirement certificate id")
    retire.add_argument("account", metavar="ACCOUNT")
    retire.add_argument("qty", metavar="QTY", help="whole tonnes")
    retire.add_argument("--project", help="the lot's registry project id (with --vintage)")
    retire.add_argument("--vintage", help="the lot's vintage year")
    retire.add_argument("--instrument", metavar="SYMBOL",
                        help="instead of a lot: the pooled holding of an instrument (e.g. a "
                             "contract's default lot)")
    retire.add_argument("--purpose", required=True,
                        help="why, one line of any language (e.g. 2024年度清缴抵销)")
    retire.add_argument("--id", dest="retire_id", metavar="ID",
                        help="your reference, unique for ever: a repeat is rejected (default "
                             "RET-<time ns>; give your own to retry safely)")
    for name, help_text in (
            ("restrict", "refuse new orders of an account or a member (Art.39/46): --side buy, "
                         "sell or both (default); cancels still work"),
            ("unrestrict", "lift a restriction or a kill of an account or a member"),
            ("kill", "kill switch: cancel every open order of an account or a member (its "
                     "broker is told over FIX) and refuse new ones until unrestrict")):
        action = add_action(name, help=help_text)
        action.add_argument("account", metavar="ACCOUNT", nargs="?",
                            help="the account (or give --member)")
        action.add_argument("--member", metavar="COMPID", help="a member (broker CompID): its "
                            "orders and those of the accounts registered to it")
        if name == "restrict":
            action.add_argument("--side", choices=("buy", "sell", "both"), default="both")
    limits = add_action("limits", help="set the position limits (Art.37) by participant type, "
                                       "replacing those in force, and the large-holder "
                                       "reporting share (Art.38)")
    limits.add_argument("caps", metavar="TYPE=PER/TOTAL", nargs="*",
                        help="e.g. key_emission_unit=500000/1000000: tonnes of one credit type "
                             "/ of all together (owned + open buys); '-' for no limit")
    limits.add_argument("--report-pct", default="0", metavar="PCT",
                        help="report a holding at this percentage of its limit (0: never)")
    add_action("state", help="show the market's state: trading open or not, the last close, "
                             "per credit type the reference price and band, best bid and ask, "
                             "resting orders, today's volume (read-only)")
    add_action("accounts", help="show every account: cash, credits, reservations, credits "
                                "bought today, fees paid (read-only)")
    send = add_action("send", help="send raw NDJSON request lines from a file")
    send.add_argument("file", metavar="FILE", help="one request per line; - reads stdin")
    p.set_defaults(run=run)


def _add_common_options(parser, default) -> None:
    """--control, --data-dir and --json, on `operator` and again on each action (so they may
    follow the action); on the actions they default to SUPPRESS, so that an option given
    before the action is not reset by the action's parser."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--control", metavar="PATH", default=default,
                       help="the control socket (as given to `ccerx serve --control`)")
    where.add_argument("--data-dir", metavar="DIR", default=default,
                       help=f"the server's data directory: its socket is DIR/{SOCKET_NAME} "
                            "(default ./data)")
    parser.add_argument("--json", action="store_true", default=default,
                        help="print every response as one JSON line (the default for all "
                             "actions but state and accounts, which print tables)")


def _add_lot_options(parser, what: str, required: bool = False) -> None:
    parser.add_argument("--credit-type", required=required,
                        help=f"{what}: afforestation, solar_thermal, offshore_wind or mangrove")
    parser.add_argument("--project", required=required,
                        help=f"{what}: its registry project id (e.g. CCER-14-2024-0001)")
    parser.add_argument("--vintage", required=required,
                        help=f"{what}: the year its reductions were generated (e.g. 2023)")


def _action_adder(actions):
    def add_action(name, **kwargs):
        action = actions.add_parser(name, **kwargs)
        _add_common_options(action, default=argparse.SUPPRESS)
        return action
    return add_action


def requests_for(args) -> list:
    """The request lines an action stands for (dicts, or raw lines for `send`)."""
    if args.action in ("eod", "state", "accounts"):
        return [{"op": args.action}]
    if args.action == "dispute":
        return [{"op": "dispute", "trade_id": args.trade_id, "note": args.note}]
    if args.action == "halt":
        return [{"op": "status", "open": False, "halt": True, "note": args.note}]
    if args.action == "resume":
        return [{"op": "status", "open": True, "note": args.note}]
    if args.action == "deposit":
        request = {"op": "deposit", "deposit_id": args.deposit_id or f"DEP-{time.time_ns()}",
                   "account": args.account}
        names_lot = any(v is not None for v in (args.credit_type, args.project, args.vintage))
        lists = args.list_symbol is not None or args.list_price is not None
        if names_lot or lists:
            return [_lot_deposit(args, request)]
        if args.amount is None:
            raise _Usage("deposit: give ACCOUNT ASSET AMOUNT, or ACCOUNT QTY with "
                         "--credit-type, --project and --vintage for credits of one lot")
        if args.asset == CASH_ASSET:
            request["cash"] = args.amount
        elif args.amount.isascii() and args.amount.isdigit():
            request["instrument"], request["qty"] = args.asset, int(args.amount)
        else:
            raise _Usage(f"deposit: AMOUNT of {args.asset} must be whole tonnes, not "
                         f"{args.amount!r}")
        return [request]
    if args.action == "list":
        request = {"op": "list", "symbol": args.symbol, "credit_type": args.credit_type,
                   "project": args.project, "vintage": _year(args.vintage),
                   "ref_price": args.price}
        request.update({key: value for key, value in (("name", args.name), ("tick", args.tick))
                        if value is not None})
        return [request]
    if args.action == "retire":
        request = {"op": "retire", "retire_id": args.retire_id or f"RET-{time.time_ns()}",
                   "account": args.account}
        if (args.instrument is None) == (args.project is None and args.vintage is None):
            raise _Usage("retire: name the credits by --project and --vintage, or --instrument "
                         "(one of them)")
        if args.instrument is not None:
            request["instrument"] = args.instrument
        elif args.project is None or args.vintage is None:
            raise _Usage("retire: a lot needs --project and --vintage, or --instrument")
        else:
            request.update(project=args.project, vintage=_year(args.vintage))
        request.update(qty=_tonnes("retire", args.qty), purpose=args.purpose)
        return [request]
    if args.action in ("restrict", "unrestrict", "kill"):
        if (args.account is None) == (args.member is None):
            raise _Usage(f"{args.action}: give an ACCOUNT or --member COMPID (one of them)")
        request = {"op": args.action, **({"member": args.member} if args.member
                                         else {"account": args.account})}
        if args.action == "restrict":
            request["side"] = args.side
        return [request]
    if args.action == "limits":
        table = {}
        for cap in args.caps:
            ptype, _, values = cap.partition("=")
            per, _, total = values.partition("/")
            try:
                table[ptype] = {k: int(v) for k, v in (("per_instrument", per), ("total", total))
                                if v not in ("", "-")}
            except ValueError:
                raise _Usage(f"limits: {cap!r} is not TYPE=PER/TOTAL in whole tonnes "
                             f"(e.g. key_emission_unit=500000/1000000)") from None
        return [{"op": "limits", "limits": table, "report_pct": args.report_pct}]
    if args.action == "send":
        data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
        return [line for line in data.splitlines() if line.strip()]
    raise AssertionError(args.action)


def _lot_deposit(args, request: dict) -> dict:
    """A deposit of credits of one lot: ACCOUNT QTY --credit-type --project --vintage
    [--list-symbol --list-price]."""
    if None in (args.credit_type, args.project, args.vintage):
        raise _Usage("deposit: a deposit of a lot needs --credit-type, --project and --vintage"
                     + (" (--list-symbol and --list-price list a lot)"
                        if args.list_symbol or args.list_price else ""))
    if args.amount is not None:
        raise _Usage(f"deposit: a deposit of a lot takes ACCOUNT QTY, not an ASSET "
                     f"({args.asset!r})")
    if (args.list_symbol is None) != (args.list_price is None):
        raise _Usage("deposit: --list-symbol and --list-price go together (the symbol and "
                     "the declared initial price)")
    request.update(credit_type=args.credit_type, project=args.project,
                   vintage=_year(args.vintage), qty=_tonnes("deposit", args.asset))
    if args.list_symbol is not None:
        request["list"] = {"symbol": args.list_symbol, "ref_price": args.list_price}
    return request


def _year(text: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) == 4):
        raise _Usage(f"--vintage must be a year such as 2023, not {text!r}")
    return int(text)


def _tonnes(action: str, text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise _Usage(f"{action}: QTY must be whole tonnes, not {text!r}")
    return int(text)


class _Usage(ValueError):
    pass


def run(args) -> int:
    if args.control and args.data_dir:       # one before the action, one after it
        print("ccerx operator: give --control or --data-dir, not both", file=sys.stderr)
        return 2
    if args.control:
        path = Path(args.control)
    else:
        data_dir = Path(args.data_dir or "data")
        if not data_dir.is_dir():
            print(f"ccerx operator: no such data directory: {data_dir} (give the server's "
                  f"--data-dir, or --control PATH for its socket)", file=sys.stderr)
            return 2
        path = data_dir / SOCKET_NAME
    try:
        requests = requests_for(args)
    except _Usage as err:
        print(f"ccerx operator: {err}", file=sys.stderr)
        return 2
    if not requests:
        return 0
    show = _print if args.json or args.action not in TABLES else TABLES[args.action]
    try:
        responses = operator_request_sync(path, requests)
    except ControlUnavailable as err:
        _print(err.responses)
        print(f"ccerx operator: {err}", file=sys.stderr)
        return 2
    show(responses)
    return 0 if all(r.get("ok") is True for r in responses) else 1


def _print(responses) -> None:
    for response in responses:
        sys.stdout.write(orjson.dumps(response).decode() + "\n")
    sys.stdout.flush()


def _print_state(responses) -> None:
    for response in responses:
        state = response.get("state")
        if state is None:            # refused: the answer as it came
            _print([response])
            continue
        closed = state["last_close_ts"]
        print(f"trading {'HALTED' if state['halted'] else 'open' if state['trading_open'] else 'closed'}"
              f"; last close {_time_text(closed) if closed else 'none yet'}; "
              f"{plural(state['seq'], 'event')}; {plural(state['accounts'], 'account')}")
        head = ["instrument", "delivers", "reference", "band low", "band high", "tick",
                "best bid", "best ask", "resting", "volume t", "turnover CNY", "trades"]
        rows = [[name, _delivers(name, i), i["reference"], i["band"][0], i["band"][1], i["tick"],
                 i["best_bid"] or "-", i["best_ask"] or "-", f"{i['resting_orders']:,}",
                 f"{i['volume']:,}", group_thousands(i["turnover"]), f"{i['trades']:,}"]
                for name, i in state["instruments"].items()]
        print(format_table(head, rows))


def _delivers(symbol: str, instrument: dict) -> str:
    """What an instrument of the state delivers: a listing's lot (project vintage), a
    contract's credit type (and vintage range), or "-" for a pooled instrument."""
    kind = instrument.get("kind")
    if kind == "listing":
        return f"{instrument['project']} {instrument['vintage']}"
    credit_type = instrument.get("credit_type") or STANDARD_CONTRACTS.get(symbol)
    if kind == "contract" and credit_type:
        low, high = instrument.get("vintage_from"), instrument.get("vintage_to")
        return credit_type + (f" {low or ''}-{high or ''}" if low or high else "")
    return "-"


def _print_accounts(responses) -> None:
    for response in responses:
        accounts = response.get("accounts")
        if accounts is None:
            _print([response])
            continue
        assets = sorted({asset for a in accounts.values() for asset in a["credits"]})
        head = (["account", "type", "member", "cash CNY", "reserved CNY", "fees paid CNY"]
                + [f"{asset} t" for asset in assets] + ["bought today t"])
        rows = []
        for name, a in accounts.items():
            rows.append([name, a["type"], a["member"] or "-", group_thousands(a["cash"]),
                         group_thousands(a["cash_reserved"]), group_thousands(a["fees_paid"])]
                        + [_held(a, asset) for asset in assets]
                        + [", ".join(f"{asset} {qty:,}" for asset, qty
                                     in sorted(a["bought_today"].items())) or "-"])
        if rows:
            print(format_table(head, rows, "lll" + "r" * (3 + len(assets)) + "l"))
            if any(a["credits_reserved"] for a in accounts.values()):
                print("(credits reserved by resting sell orders in parentheses)")
        else:
            print("no accounts (the server runs without pre-trade checks)")


def _held(account: dict, asset: str) -> str:
    held = account["credits"].get(asset, 0)
    reserved = account["credits_reserved"].get(asset, 0)
    return f"{held:,}" + (f" ({reserved:,})" if reserved else "")


def _time_text(ts_ns: int) -> str:
    from datetime import datetime, timedelta, timezone
    return datetime.fromtimestamp(ts_ns / 1e9, timezone(timedelta(hours=8))).strftime(
        "%Y-%m-%d %H:%M:%S China time")


TABLES = {"state": _print_state, "accounts": _print_accounts}
