"""The NDJSON edge: command lines in, event lines out, book snapshots.

Command line format (one JSON object per line; see README "ccerx replay"):
  {"op":"instrument","symbol":"CCER-AFF","tick":"0.01","lot":1,"max_qty":99999,"ref_price":"62.00","band_pct":10}
  {"op":"new","ts":1706000000000000000,"order_id":"o1","account":"A1","instrument":"CCER-AFF",
   "side":"buy","type":"limit","tif":"day","price":"62.01","qty":100}
  {"op":"new","order_id":"t1","account":"A2","instrument":"CCER-AFF","side":"sell","type":"take",
   "qty":100}                        (摘牌: best level only; "target":"o1" takes that listing only)
  {"op":"cancel","order_id":"o1"}
  {"op":"amend","order_id":"o1","price":"62.02","qty":80}
  {"op":"eod"}
  {"op":"status","open":false,"note":"lunch break"}
  {"op":"status","open":false,"halt":true,"note":"system check"}
  {"op":"deposit","deposit_id":"ISS-1","account":"PO1","instrument":"CCER-SOL","qty":50000}
  {"op":"deposit","deposit_id":"F-1","account":"EM01","cash":"1000000.00"}
  {"op":"instrument","symbol":"AFF-0001-2023","credit_type":"afforestation",
   "project":"CCER-14-2024-0001","vintage":2023,"ref_price":"62.00"}   (a listing of one lot)
  {"op":"deposit","deposit_id":"ISS-7","account":"HOLD01","credit_type":"afforestation",
   "project":"CCER-14-2024-0001","vintage":2023,"qty":50000}           (credits of one lot;
   "list":{"symbol":"AFF-0001-2023","ref_price":"62.00"} lists it on its first transfer in)
  {"op":"retire","retire_id":"R-1","account":"EM01","project":"CCER-14-2024-0001",
   "vintage":2023,"qty":100,"purpose":"2024年度清缴抵销"}   (or "instrument" for a pooled holding)
  {"op":"limits","limits":{"key_emission_unit":{"per_instrument":500000,"total":1000000}},
   "report_pct":"50"}                (Art.37/38; {} lifts every limit; report_pct 0: no reports)
  {"op":"restrict","account":"EM01","side":"buy"}   (or "member":"BROKER01"; side buy|sell|both)
  {"op":"unrestrict","member":"BROKER01"}
  {"op":"kill","account":"EM01"}     (cancel its open orders, refuse new ones: unrestrict lifts it)
A line that cannot become a command becomes `Malformed`, which the engine rejects in sequence.
"""
from __future__ import annotations

import orjson

from ccerx.engine.core.commands import (AmendOrder, CancelOrder, DefineInstrument, Deposit, EndOfDay, Malformed,
                       NewOrder, Restrict, Retire, SetLimits, SetTradingStatus)
from ccerx.engine.core.events import (DayClosed, Deposited, DepositRejected, InstrumentDefined,
                     LargeHolderReported, LimitsSet, OrderAccepted, OrderAmended, OrderCancelled,
                     OrderRejected, RestrictionChanged, Retired, TradeExecuted,
                     TradingStatusChanged)
from ccerx.engine.core.lots import lots_json
from ccerx.engine.core.types import (CASH_ASSET, DecimalFormatError, InstrumentSpec,
                                     control_character, format_fen, parse_cny_to_fen,
                                     parse_decimal_units, price_field)

_loads = orjson.loads


def _str_or_none(value):
    return value if type(value) is str else None


_PRICE_UNITS: dict = {}   # price text -> price units: a flow repeats a few thousand texts


def _price_field(value):
    """`price_field`, with the units of a valid price text remembered (up to 65,536 texts)."""
    units = _PRICE_UNITS.get(value) if type(value) is str else None
    if units is None:
        units = price_field(value)
        if type(units) is int and len(_PRICE_UNITS) < 65_536:
            _PRICE_UNITS[value] = units
    return units


def parse_command(line: bytes | str):
    """One NDJSON line -> one command (never raises)."""
    try:
        obj = _loads(line)
    except orjson.JSONDecodeError:
        return Malformed(None, None, "line is not valid JSON")
    if type(obj) is not dict:
        return Malformed(None, None, "line is not a JSON object")
    op = obj.get("op")
    ts = obj.get("ts")
    if ts is not None and (type(ts) is not int or ts < 0 or ts >= 1 << 63):
        return Malformed(_str_or_none(op), _str_or_none(obj.get("order_id")),
                         "ts must be a non-negative integer of nanoseconds")
    get = obj.get
    if op == "new":
        return NewOrder(get("order_id"), get("account"), get("instrument"), get("side"),
                        get("type", "limit"), get("tif"), _price_field(get("price")), get("qty"),
                        ts, None, get("target"))
    if op == "cancel":
        return CancelOrder(get("order_id"), ts)
    if op == "amend":
        return AmendOrder(get("order_id"), price_field(get("price")), get("qty"), ts)
    if op == "instrument":
        fields = {k: v for k, v in obj.items() if k not in ("op", "ts")}
        try:
            return DefineInstrument(InstrumentSpec.from_fields(**fields), ts)
        except (TypeError, ValueError) as bad:
            return Malformed("instrument", None, f"bad instrument definition: {bad}"[:200])
    if op == "eod":
        return EndOfDay(ts)
    if op == "status":
        is_open, note, halt = obj.get("open"), obj.get("note", ""), obj.get("halt", False)
        if (type(is_open) is not bool or type(note) is not str or len(note) > 200
                or type(halt) is not bool or (halt and is_open)):
            return Malformed("status", None, "status needs \"open\": true|false, an optional "
                                             "note and, when closing, an optional \"halt\": true")
        bad = control_character(note)
        if bad is not None:
            return Malformed("status", None, f"the note holds a control character ({bad!r}): a "
                                             "note is one line of plain text, sent to every broker")
        return SetTradingStatus(is_open, note, ts, halt)
    if op == "deposit":
        return _deposit(obj, ts)
    if op == "limits":
        return _limits(obj, ts)
    if op in ("restrict", "unrestrict", "kill"):
        return _restrict(op, obj, ts)
    if op == "retire":
        return Retire(get("retire_id"), get("account"), get("project"), get("vintage"),
                      get("qty"), get("purpose"), get("instrument"), ts)
    return Malformed(_str_or_none(op), _str_or_none(obj.get("order_id")),
                     f"unknown op {op!r}; expected new, cancel, amend, instrument, eod, status, "
                     f"deposit, limits, restrict, unrestrict, kill or retire"[:200])


def limits_from_fields(table, report_pct) -> tuple:
    """({participant type: {"per_instrument": t, "total": t}}, percent) -> the SetLimits
    fields (limits tuple, report_ppm), or raise ValueError saying what is wrong. The one
    reader of limits for the NDJSON op and the gateway config."""
    if type(table) is not dict:
        raise ValueError("limits must be an object: participant type -> "
                         "{\"per_instrument\": tonnes, \"total\": tonnes}")
    rows = []
    for ptype, caps in sorted(table.items()):
        if type(caps) is not dict or not set(caps) <= {"per_instrument", "total"}:
            raise ValueError(f"limits of {str(ptype)[:40]!r} must be an object with "
                             f"per_instrument and/or total (tonnes)")
        rows.append((ptype, caps.get("per_instrument"), caps.get("total")))
    if report_pct is None:
        report_pct = 0
    if type(report_pct) is int:
        report_pct = str(report_pct)
    try:
        ppm = parse_decimal_units(report_pct, 10_000) if type(report_pct) is str else None
    except DecimalFormatError:
        ppm = None
    if ppm is None or not 0 <= ppm <= 1_000_000:
        raise ValueError("report_pct must be a percentage from 0 to 100 with at most 4 decimal "
                         "places, e.g. \"50\"")
    return tuple(rows), ppm


def _limits(obj: dict, ts):
    extra = set(obj) - {"op", "ts", "limits", "report_pct"}
    if extra or "limits" not in obj:
        return Malformed("limits", None, "limits takes \"limits\" and an optional "
                                         "\"report_pct\"" + (f", not {sorted(extra)}"[:80] if extra else ""))
    try:
        limits, ppm = limits_from_fields(obj["limits"], obj.get("report_pct"))
    except ValueError as bad:
        return Malformed("limits", None, str(bad)[:200])
    return SetLimits(limits, ppm, ts)


def _restrict(op: str, obj: dict, ts):
    scopes = [k for k in ("account", "member") if k in obj]
    allowed = {"op", "ts", "account", "member"} | ({"side"} if op == "restrict" else set())
    if len(scopes) != 1 or set(obj) - allowed:
        return Malformed(op, None, f"{op} takes one of \"account\" or \"member\""
                         + (" and \"side\": buy|sell|both" if op == "restrict" else ""))
    side = {"restrict": obj.get("side", "both"), "unrestrict": "none", "kill": "both"}[op]
    if op == "restrict" and side not in ("buy", "sell", "both"):
        return Malformed(op, None, "side must be \"buy\", \"sell\" or \"both\"")
    return Restrict(scopes[0], obj[scopes[0]], side, op == "kill", ts)


def _deposit(obj: dict, ts):
    """Credits: "instrument" + "qty" (whole tonnes), or a lot ("credit_type", "project",
    "vintage") + "qty", optionally "list": {"symbol", "ref_price"}; cash: "cash" (decimal
    CNY string)."""
    deposit_id = obj.get("deposit_id")
    if any(key in obj for key in ("credit_type", "project", "vintage", "list")):
        if "instrument" in obj or "cash" in obj:
            return Malformed("deposit", _str_or_none(deposit_id), "a deposit of a lot names "
                             "credit_type, project and vintage, not an instrument or cash")
        listing = obj.get("list")
        symbol = price = None
        if listing is not None:
            if type(listing) is not dict or set(listing) != {"symbol", "ref_price"}:
                return Malformed("deposit", _str_or_none(deposit_id), "\"list\" must be "
                                 "{\"symbol\": ..., \"ref_price\": \"62.00\"}")
            symbol, price = listing["symbol"], price_field(listing["ref_price"])
        return Deposit(deposit_id, obj.get("account"), None, obj.get("qty"), ts, None,
                       obj.get("credit_type"), obj.get("project"), obj.get("vintage"),
                       symbol, price)
    has_credits, has_cash = "instrument" in obj or "qty" in obj, "cash" in obj
    if has_credits == has_cash:
        return Malformed("deposit", _str_or_none(deposit_id), "a deposit needs either "
                         "\"instrument\" and \"qty\" (tonnes) or \"cash\" (CNY), not both")
    if has_cash:
        cash = obj["cash"]
        try:
            amount = parse_cny_to_fen(cash) if type(cash) is str else None
        except ValueError:
            amount = None
        if amount is None:
            return Malformed("deposit", _str_or_none(deposit_id),
                             "cash must be a decimal CNY string with at most 2 places, e.g. \"1000.00\"")
        return Deposit(deposit_id, obj.get("account"), CASH_ASSET, amount, ts)
    if obj.get("instrument") == CASH_ASSET:   # qty would be read as fen: 1000000 -> 10,000.00
        return Malformed("deposit", _str_or_none(deposit_id),
                         f"{CASH_ASSET} is deposited as \"cash\": a decimal {CASH_ASSET} string, "
                         f"e.g. \"cash\": \"1000000.00\" (not \"instrument\": \"{CASH_ASSET}\" "
                         f"with \"qty\")")
    return Deposit(deposit_id, obj.get("account"), obj.get("instrument"), obj.get("qty"), ts)


def event_to_dict(event, specs: dict[str, InstrumentSpec]) -> dict:
    """Engine event -> JSON-ready dict with decimal-string prices (uses the current specs)."""
    kind = type(event)
    if kind is TradeExecuted:
        spec = specs[event.instrument]
        return {"type": "trade", "seq": event.seq, "ts": event.ts, "trade_id": event.trade_id,
                "instrument": event.instrument, "price": spec.ticks_to_text(event.price),
                "qty": event.qty, "buy_order_id": event.buy_order_id,
                "sell_order_id": event.sell_order_id, "aggressor": event.aggressor.value,
                "buy_account": event.buy_account, "sell_account": event.sell_account,
                "buy_fee": format_fen(event.buy_fee), "sell_fee": format_fen(event.sell_fee),
                **({"lots": lots_json(event.lots)} if event.lots else {})}
    if kind is OrderAccepted:
        spec = specs[event.instrument]
        return {"type": "accepted", "seq": event.seq, "ts": event.ts, "order_id": event.order_id,
                "account": event.account, "instrument": event.instrument,
                "side": event.side.value, "order_type": event.order_type.value,
                "tif": event.tif.value,
                "price": None if event.price is None else spec.ticks_to_text(event.price),
                "qty": event.qty}
    if kind is OrderRejected:
        return {"type": "rejected", "seq": event.seq, "ts": event.ts, "op": event.op,
                "order_id": event.order_id, "reason": event.reason.value, "text": event.text}
    if kind is OrderCancelled:
        return {"type": "cancelled", "seq": event.seq, "ts": event.ts, "order_id": event.order_id,
                "account": event.account, "instrument": event.instrument,
                "side": event.side.value, "reason": event.reason.value,
                "cancelled_qty": event.cancelled_qty, "filled_qty": event.filled_qty}
    if kind is OrderAmended:
        spec = specs[event.instrument]
        return {"type": "amended", "seq": event.seq, "ts": event.ts, "order_id": event.order_id,
                "account": event.account, "instrument": event.instrument,
                "side": event.side.value, "price": spec.ticks_to_text(event.price),
                "qty": event.qty, "open_qty": event.open_qty,
                "priority_kept": event.priority_kept}
    if kind is InstrumentDefined:
        return {"type": "instrument", "seq": event.seq, "ts": event.ts, **event.spec.to_json()}
    if kind is DayClosed:
        spec = specs[event.instrument]
        return {"type": "day_closed", "seq": event.seq, "ts": event.ts,
                "instrument": event.instrument, "close": spec.ticks_to_text(event.close_ticks),
                "volume": event.volume, "turnover": format_fen(event.turnover_fen),
                "trades": event.trades}
    if kind is TradingStatusChanged:
        out = {"type": "status", "seq": event.seq, "ts": event.ts, "open": event.open,
               "note": event.note}
        if event.halted:
            out["halted"] = True
        return out
    if kind is Deposited:
        return {"type": "deposited", "seq": event.seq, "ts": event.ts,
                "deposit_id": event.deposit_id, "account": event.account, "asset": event.asset,
                "amount": format_fen(event.amount) if event.asset == CASH_ASSET else event.amount,
                **({"credit_type": event.credit_type, "project": event.project,
                    "vintage": event.vintage} if event.project is not None else {})}
    if kind is Retired:
        return {"type": "retired", "seq": event.seq, "ts": event.ts,
                "retire_id": event.retire_id, "account": event.account, "asset": event.asset,
                "qty": event.qty, "purpose": event.purpose, "certificate": event.certificate,
                **({"credit_type": event.credit_type, "project": event.project,
                    "vintage": event.vintage} if event.project is not None else {})}
    if kind is DepositRejected:
        return {"type": "deposit_rejected", "seq": event.seq, "ts": event.ts,
                "deposit_id": event.deposit_id, "reason": event.reason.value, "text": event.text}
    if kind is LimitsSet:
        return {"type": "limits", "seq": event.seq, "ts": event.ts,
                "limits": {t: {"per_instrument": per, "total": total}
                           for t, per, total in event.limits},
                "report_pct": _pct(event.report_ppm)}
    if kind is LargeHolderReported:
        return {"type": "large_holder", "seq": event.seq, "ts": event.ts,
                "account": event.account, "instrument": event.instrument,
                "holding": event.holding, "limit": event.limit}
    if kind is RestrictionChanged:
        return {"type": "restriction", "seq": event.seq, "ts": event.ts, event.scope: event.target,
                "side": event.side, "kill": event.kill}
    raise TypeError(f"not an engine event: {event!r}")


def _pct(ppm: int) -> str:
    whole, rest = divmod(ppm, 10_000)
    return f"{whole}.{rest:04d}".rstrip("0").rstrip(".") if rest else str(whole)


def encode_event(event, specs) -> bytes:
    return orjson.dumps(event_to_dict(event, specs))


def market_state(exchange) -> dict:
    """What an operator checks at a glance (edge form, decimal strings): trading open or not,
    the last close, and per credit type the reference price and band, the best bid and ask,
    what rests, and today's volume, turnover and trades."""
    instruments = {}
    for symbol, spec in exchange.specs.items():
        book = exchange.books[symbol]
        bid, ask = book.best_bid(), book.best_ask()
        volume, turnover, trades = exchange.day_stats[symbol]
        text = spec.ticks_to_text
        instruments[symbol] = {
            "reference": text(spec.ref_ticks), "band": [text(spec.min_ticks), text(spec.max_ticks)],
            "tick": text(1), "best_bid": None if bid is None else text(bid),
            "best_ask": None if ask is None else text(ask), "resting_orders": len(book.orders),
            "volume": volume, "turnover": format_fen(turnover * spec.tick_fen), "trades": trades,
            **({"kind": spec.kind, **spec.lot_json(), "credit_type": spec.credit_type}
               if spec.kind != "pooled" else {})}
    accounts = exchange.accounts
    return {"trading_open": exchange.trading_open, "halted": exchange.halted, "last_close_ts": exchange.last_close_ts or None,
            "seq": exchange.seq, "accounts": None if accounts is None else len(accounts.by_id),
            "instruments": instruments}


def books_to_json(exchange) -> dict:
    """{"CCER-AFF": {"buy": [["62.01", [["o2", 1000], ...]], ...], "sell": [...]}, ...}"""
    out = {}
    for symbol, snapshot in exchange.snapshot_books().items():
        spec = exchange.specs[symbol]
        out[symbol] = {side: [[spec.ticks_to_text(price), [[oid, qty] for oid, qty in orders]]
                              for price, orders in levels]
                       for side, levels in snapshot.items()}
    return out
