"""The FIX venue: the same agents trading through a running `ccerx serve` over real TCP.

Theory of operation. Each agent group (emitters, project owners, institutions, noise
traders) is one broker session (SIMEMIT, SIMPROJ, SIMINST, SIMNOIS) on a plain blocking
socket; messages are encoded and parsed with simplefix, an independent FIX library, so the
gateway is exercised exactly as a broker's engine would. `gateway_config_text()` writes the
gateway config that registers every agent's account with its group's broker and the
scenario's opening balances; `ccerx serve --config` that file, then run the simulation.

The simulation loop is synchronous, so the venue makes every request synchronous too: it
sends the order (D) or cancel (F), then a TestRequest on the same session, and reads all
sessions until the Heartbeat answering it arrives. The gateway handles a session's messages
in order, so by then every execution report of that request on that session has arrived,
and so has the session's market data (each session subscribes to the top five levels of
every credit type, incrementally; `top()` and `depth()` read the view of the session that
synchronised last). The counterparty's half of a trade arrives on its own session, maybe a
little later: halves are paired by trade id (ExecID "T<id>-B" / "T<id>-S") and only a
complete pair becomes a `TradeExecuted`. At the close every session is synchronised.

What FIX does not carry goes through the server's operator control socket (`ccerx serve
--control`, gateway/control.py), the way an exchange's operations desk would act:
- the close: `end_of_day()` asks the server for its end of day; the day orders expire (the
  brokers receive ExecType C reports, as they would at 15:00) and the exchange's own VWAP
  closes come back, which become the next day's reference prices and bands here too;
- issuance: `issue()` deposits the batch into the owner's account at the exchange (an
  engine `Deposit`, journaled and settled to the exchange's ledger like any trade); with
  lots, `deposit_lots()` moves lots in (one request line each, all in one exchange with the
  socket), declaring the owners' listings, which the sessions then subscribe to;
- retirement (注销): `retire()` is the operator's `retire` (FIX has no retirement message);
- lots delivered: a fill's ExecutionReport names the lots its trade delivered (NoUnderlyings,
  gateway/fix/lots.py); the brokers' books move exactly those, and reserve a contract sell's
  lots at its acceptance by the engine's own allocation order (Accounts.allocation);
- the exchange's accounts live in the server, so balances (cash available, sellable
  credits) are a broker-side shadow kept from the execution reports and the deposits, the
  way a broker tracks its clients' buying power; reconciliation compares the trades with
  that shadow, and the server's own ledger can be compared with it after the run.
Event timestamps are the simulated clock of the request (the engine stamps its own receive
time, which the reports carry as TransactTime).
"""
from __future__ import annotations

import select
import socket
import time
from datetime import datetime, timezone

from ccerx.engine.core.commands import CancelOrder, NewOrder
from ccerx.engine.core.events import (DayClosed, Deposited, InstrumentDefined, OrderAccepted,
                                      OrderCancelled, OrderRejected, Retired, TradeExecuted)
from ccerx.engine.core.lots import Lot
from ccerx.engine.core.risk import PPM, Account, Accounts
from ccerx.engine.core.types import (CancelReason, InstrumentSpec, OrderType, RejectReason, Side,
                                     TimeInForce, format_fen, format_price_units,
                                     parse_cny_to_fen, parse_price_units)

from ccerx.scripts.simulate.venue import AccountView

GATEWAY = "CCERX"
GROUP_BROKERS = {"emitter": "SIMEMIT", "project_owner": "SIMPROJ", "market_maker": "SIMINST",
                 "noise_trader": "SIMNOIS"}
OTHER_BROKER = "SIMOTHR"
FIX_SIDE = {"buy": "1", "sell": "2"}
FIX_TIF = {"day": "0", "ioc": "3", "fok": "4"}
TIF_OF = {"0": TimeInForce.DAY, "3": TimeInForce.IOC, "4": TimeInForce.FOK}
SIDE_OF = {b"1": Side.BUY, b"2": Side.SELL}
CANCEL_REASON_OF_TEXT = {
    "unfilled rest of an immediate-or-cancel order": CancelReason.IOC,
    "fill-or-kill order could not be filled completely": CancelReason.FOK,
    "unfilled rest of a market order": CancelReason.MARKET,
    "day order expired at the close": CancelReason.EOD,
    "cancelled by self-trade prevention": CancelReason.STP,
}
REJECT_REASONS = {r.value: r for r in RejectReason}


def broker_of(agent) -> str:
    return GROUP_BROKERS.get(agent.kind, OTHER_BROKER)


def gateway_config_text(session) -> str:
    """A `ccerx serve` config registering every agent's account under its group's broker,
    with the opening balances of `session` (a `run.Session` not yet run); issuance arrives
    later as deposits. Brokers have no password: a closed loopback network is assumed."""
    lines = [f"# ccerx simulate --mode fix: scenario {session.scenario.name!r}, "
             f"seed {session.scenario.seed}", "[gateway]", f'comp_id = "{GATEWAY}"',
             "message_rate = 0   # all of a group's agents share one session: no per-session cap",
             ""]
    by_broker: dict[str, list] = {}
    for agent in session.agents:
        by_broker.setdefault(broker_of(agent), []).append(agent)
    for broker, agents in by_broker.items():
        lines += ["[[broker]]", f'comp_id = "{broker}"', "reset_on_logon = true", ""]
        for agent in agents:
            a = session.accounts.by_id[agent.account]
            held = ", ".join(f'"{k}" = {v}' for k, v in sorted(a.credits.items()) if v)
            lines += ["[[broker.account]]", f'account = "{a.account}"',
                      f'type = "{a.participant_type.value}"', f'cash = "{format_fen(a.cash)}"',
                      f"credits = {{ {held} }}", ""]
    return "\n".join(lines)


class FixUnavailable(RuntimeError):
    """The gateway could not be reached or refused the simulation's sessions."""




class _Conn:
    """One broker session: a blocking socket, a simplefix parser, its market-data view."""

    def __init__(self, comp_id: str, host: str, port: int, simplefix):
        self.comp_id = comp_id
        self.simplefix = simplefix
        try:
            self.sock = socket.create_connection((host, port), timeout=10)
        except OSError as err:
            raise FixUnavailable(f"cannot connect to the gateway at {host}:{port}: "
                                 f"{err.strerror or err}") from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.parser = simplefix.FixParser()
        self.seq = 0
        self.logged_on = False
        self.view: dict[str, dict[tuple[bytes, int], int]] = {}   # symbol -> (type, ticks) -> t

    def send(self, msg_type: str, fields) -> None:
        m = self.simplefix.FixMessage()
        self.seq += 1
        m.append_pair(8, "FIX.4.4", header=True)
        m.append_pair(35, msg_type, header=True)
        m.append_pair(49, self.comp_id, header=True)
        m.append_pair(56, GATEWAY, header=True)
        m.append_pair(34, self.seq, header=True)
        m.append_pair(52, datetime.now(timezone.utc).strftime("%Y%m%d-%H:%M:%S.%f")[:-3],
                      header=True)
        for tag, value in fields:
            m.append_pair(tag, value)
        try:
            self.sock.sendall(m.encode())
        except OSError as err:
            raise FixUnavailable(f"the {self.comp_id} session to the gateway failed: "
                                 f"{err.strerror or err}") from None


class FixVenue(AccountView):
    mode = "fix"

    def __init__(self, host: str, port: int, session, control, timeout: float = 30.0):
        import simplefix
        self.specs = dict(session.specs)          # moved by the server's closes
        self.books = None
        self.timeout = timeout
        self.fee_ppm = session.fee_ppm
        self.control = control                    # the server's operator socket
        self.run_id = f"{session.scenario.seed}-{time.time_ns():x}"   # deposit ids never repeat
        self.deposits = 0
        self.broker_of_account = {a.account: broker_of(a) for a in session.agents}
        # broker-side shadow of the accounts (opening balances, then deposits and fills)
        self.accounts = Accounts(fee_ppm=session.fee_ppm)
        for a in session.accounts.by_id.values():
            self.accounts.add(Account(a.account, a.participant_type, None, a.cash,
                                      credits=dict(a.credits)))
        # the server must hold exactly this scenario's opening balances (fails early, too, if
        # the socket is not there): a config from another scenario or seed, or a server that
        # already traded, would make every comparison below meaningless
        differences = self.exchange_problems()
        if differences:
            raise FixUnavailable(
                f"the server's accounts are not this scenario's opening balances "
                f"({len(differences)} differences, e.g. {differences[0]}): start `ccerx serve` "
                f"on a fresh --data-dir with the config `ccerx simulate --gateway-config` wrote "
                f"for the same --scenario, --seed and --days")
        self.orders: dict[str, list] = {}         # order id -> [symbol, side, price, open, account]
        self.halves: dict[int, dict] = {}         # trade id -> the half reports seen so far
        self.ts = 0
        self.current = None                       # order id of the request being synchronised
        self.pending_events: list = []
        self.conns: dict[str, _Conn] = {}
        self.fresh = None
        self.test_id = 0
        brokers = list(dict.fromkeys(self.broker_of_account.values()))
        for broker in brokers:
            self.conns[broker] = _Conn(broker, host, port, simplefix)
        self.by_sock = {c.sock.fileno(): c for c in self.conns.values()}
        for c in self.conns.values():
            c.send("A", [(98, "0"), (108, "30"), (141, "Y"), (553, c.comp_id)])
        self._read_until(lambda: all(c.logged_on for c in self.conns.values()), "logon")
        self.md_requests = 0
        self._subscribe(list(self.specs))
        self.sync_all()

    def _subscribe(self, symbols: list[str]) -> None:
        """Every session subscribes to the top five levels of `symbols`, incrementally."""
        for c in self.conns.values():
            self.md_requests += 1
            fields = [(262, f"md{self.md_requests}"), (263, "1"), (264, "5"), (265, "1"),
                      (267, "2"), (269, "0"), (269, "1"), (146, str(len(symbols)))]
            fields += [(55, s) for s in symbols]
            c.send("V", fields)

    # ------------------------------------------------------------------ reading
    def _read_until(self, done, what: str) -> None:
        deadline = time.monotonic() + self.timeout
        socks = [c.sock for c in self.conns.values()]
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise FixUnavailable(f"no answer from the gateway ({what}) within {self.timeout} s")
            ready, _, _ = select.select(socks, [], [], left)
            for sock in ready:
                self._receive(self.by_sock[sock.fileno()])

    def _receive(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(1 << 16)
        except OSError as err:
            raise FixUnavailable(f"the {conn.comp_id} session to the gateway failed: "
                                 f"{err.strerror or err}") from None
        if not data:
            raise FixUnavailable(f"the gateway closed the {conn.comp_id} session")
        conn.parser.append_buffer(data)
        while (msg := conn.parser.get_message()) is not None:
            self._on_message(conn, msg)

    def _drain(self) -> None:
        """Read whatever is already waiting on any session, without blocking."""
        socks = [c.sock for c in self.conns.values()]
        while True:
            ready, _, _ = select.select(socks, [], [], 0)
            if not ready:
                return
            for sock in ready:
                self._receive(self.by_sock[sock.fileno()])

    def _sync(self, conn: _Conn) -> None:
        self.test_id += 1
        token = f"s{self.test_id}"
        conn.answered = None
        conn.send("1", [(112, token)])
        self._read_until(lambda: conn.answered == token, "heartbeat")
        self._drain()
        self.fresh = conn

    def sync_all(self) -> None:
        for conn in self.conns.values():
            self._sync(conn)

    # ------------------------------------------------------------------ messages in
    def _on_message(self, conn: _Conn, msg) -> None:
        kind = msg.get(35)
        if kind == b"8":
            self._on_report(conn, msg)
        elif kind == b"X" or kind == b"W":
            self._on_market_data(conn, msg, kind == b"W")
        elif kind == b"0":
            token = msg.get(112)
            if token is not None:
                conn.answered = token.decode()
        elif kind == b"1":
            conn.send("0", [(112, msg.get(112).decode())])
        elif kind == b"A":
            conn.logged_on = True
        elif kind == b"9":
            order_id = (msg.get(41) or b"").decode()
            self.pending_events.append(OrderRejected(0, self.ts, "cancel", order_id,
                                                     RejectReason.ORDER_NOT_RESTING,
                                                     (msg.get(58) or b"").decode()))
        elif kind in (b"3", b"j", b"5", b"Y"):
            text = (msg.get(58) or b"").decode()
            raise FixUnavailable(f"gateway {kind.decode()} on {conn.comp_id}: {text}")

    def _on_market_data(self, conn: _Conn, msg, snapshot: bool) -> None:
        entries, entry = [], None
        symbol = (msg.get(55) or b"").decode()
        for tag, value in msg.pairs:
            tag = int(tag)              # simplefix keeps tags as bytes
            if tag in (279, 269) and (entry is None or tag in entry or (tag == 269 and snapshot)):
                entry = {}
                entries.append(entry)
            if entry is not None:
                entry[tag] = value
        if snapshot:
            conn.view[symbol] = {}
        for e in entries:
            etype = e.get(269)
            if etype not in (b"0", b"1"):
                continue                      # trades: the reports tell us those
            s = e.get(55, b"").decode() or symbol
            spec = self.specs[s]
            ticks = parse_price_units(e[270].decode()) // spec.tick_units
            view = conn.view.setdefault(s, {})
            if e.get(279) == b"2":
                view.pop((etype, ticks), None)
            else:
                view[(etype, ticks)] = int(e[271])

    def _on_report(self, conn: _Conn, msg) -> None:
        exec_type = msg.get(150)
        order_id = msg.get(11).decode()
        ts = self.ts
        if exec_type == b"0":
            order = self.orders[order_id]
            spec = self.specs[order[0]]
            self.pending_events.append(OrderAccepted(
                0, ts, order_id, order[4], order[0], SIDE_OF[msg.get(54)], OrderType.LIMIT,
                TIF_OF[msg.get(59).decode()], order[2], int(msg.get(38))))
            self._reserve(order, spec)
        elif exec_type == b"F":
            self._on_half(msg, order_id)
        elif exec_type in (b"4", b"C"):
            original = (msg.get(41) or msg.get(11)).decode()
            order = self.orders.get(original)
            if order is None:
                return
            text = (msg.get(58) or b"").decode()
            reason = CANCEL_REASON_OF_TEXT.get(text, CancelReason.USER)
            filled = int(msg.get(14))
            self.pending_events.append(OrderCancelled(
                0, ts, original, order[4], order[0], SIDE_OF[msg.get(54)], reason,
                int(msg.get(38)) - filled, filled))
            self._release(order)
        elif exec_type == b"8":
            text = (msg.get(58) or b"").decode()
            reason = REJECT_REASONS.get(text.split(":", 1)[0], RejectReason.MALFORMED)
            self.orders.pop(order_id, None)
            self.pending_events.append(OrderRejected(0, ts, "new", order_id, reason, text))

    def _on_half(self, msg, order_id: str) -> None:
        exec_id = msg.get(17).decode()            # "T<trade id>-B" / "-S"
        trade_id, half = int(exec_id[1:-2]), exec_id[-1]
        fee = parse_cny_to_fen(msg.get(12).decode()) if msg.get(12) is not None else 0
        order = self.orders[order_id]
        spec = self.specs[order[0]]
        price = parse_price_units(msg.get(31).decode()) // spec.tick_units
        qty, leaves = int(msg.get(32)), int(msg.get(151))
        lots = _delivered(msg)
        seen = self.halves.setdefault(trade_id, {"ts": self.ts})
        seen[half] = (order_id, order[4], fee, leaves, price, qty, order[0], lots)
        self._settle_half(order, spec, half, price, qty, fee, lots)
        if "B" in seen and "S" in seen:
            del self.halves[trade_id]
            b, s = seen["B"], seen["S"]
            aggressor = Side.BUY if b[0] == self.current else Side.SELL
            if b[7] != s[7]:
                raise FixUnavailable(f"trade {trade_id}: the buyer was told lots {b[7]}, the "
                                     f"seller {s[7]}")
            self.pending_events.append(TradeExecuted(
                0, seen["ts"], trade_id, b[6], b[4], b[5], b[0], s[0], aggressor, b[1], s[1],
                b[2], s[2], b[3], s[3], tuple((None, None, q) if p is None else (p, v, q)
                                              for p, v, q in b[7])))

    # ------------------------------------------------------------------ broker-side shadow
    def _reserve(self, order, spec) -> None:
        account = self.accounts.by_id[order[4]]
        if order[1] == "buy":
            gross = order[2] * spec.tick_fen * order[3]
            order.append(gross + gross * self.fee_ppm // PPM)
            account.cash_reserved += order[5]
        else:
            # the lots it reserves: a contract's by the engine's allocation order (the
            # engine reserved the same at entry: these books hold what the exchange holds)
            if self.accounts.lots and spec.kind == "contract":
                allocation = self.accounts.allocation(account, spec, order[3])
            else:
                allocation = [[spec.holding, order[3]]]
            order += [order[3], allocation]
            reserved = account.credits_reserved
            for key, qty in allocation:
                reserved[key] = reserved.get(key, 0) + qty

    def _release(self, order) -> None:
        if len(order) < 6 or not order[5]:
            return
        account = self.accounts.by_id[order[4]]
        if order[1] == "buy":
            account.cash_reserved -= order[5]
        else:
            for key, qty in order[6]:
                account.credits_reserved[key] -= qty
            order[6] = []
        order[5] = 0

    def _settle_half(self, order, spec, half, price, qty, fee, lots) -> None:
        account = self.accounts.by_id[order[4]]
        gross = price * spec.tick_fen * qty
        order[3] -= qty
        moved = [(_key(p, v, spec), q) for p, v, q in lots] or [(spec.holding, qty)]
        if half == "B":
            account.cash -= gross + fee
            for key, q in moved:
                account.credits[key] = account.credits.get(key, 0) + q
                account.bought_today[key] = account.bought_today.get(key, 0) + q
            if len(order) > 5:
                charge = min(order[5], gross + fee)
                order[5] -= charge
                account.cash_reserved -= charge
        else:
            account.cash += gross - fee
            for key, q in moved:
                account.credits[key] -= q
            if len(order) > 5:
                order[5] -= qty
                allocation = order[6]
                for key, q in moved:       # delivered from what the sell reserved
                    entry = next((x for x in allocation if x[0] == key), None)
                    if entry is None or entry[1] < q:
                        raise FixUnavailable(f"{order[4]}: the exchange delivered {q} t of {key}"
                                             f" that the brokers' books had not reserved")
                    entry[1] -= q
                    account.credits_reserved[key] -= q
                order[6] = [x for x in allocation if x[1]]
        account.fees_paid += fee
        if order[3] == 0:
            self._release(order)

    # ------------------------------------------------------------------ the venue interface
    def send(self, command) -> list:
        self.ts = command.ts or self.ts
        if type(command) is NewOrder:
            spec = self.specs[command.instrument]
            broker = self.broker_of_account[command.account]
            take = command.order_type == "take"
            if take:    # priced at the best level of the other side, as the engine will
                bid, ask = self.top(command.instrument)
                ticks = ask if command.side == "buy" else bid
            else:
                ticks = command.price_units // spec.tick_units
            self.orders[command.order_id] = [command.instrument, command.side, ticks,
                                             command.qty, command.account]
            fields = [(11, command.order_id), (1, command.account), (55, command.instrument),
                      (54, FIX_SIDE[command.side]), (60, _fix_time(command.ts)),
                      (38, str(command.qty))]
            fields += [(40, "Q")] if take else [(40, "2"), (44, spec.ticks_to_text(ticks)),
                                                 (59, FIX_TIF[command.tif])]
            self.current = command.order_id
            conn = self.conns[broker]
            conn.send("D", fields)
        elif type(command) is CancelOrder:
            order = self.orders[command.order_id]
            conn = self.conns[self.broker_of_account[order[4]]]
            conn.send("F", [(41, command.order_id), (11, f"{command.order_id}.x"),
                            (55, order[0]), (54, FIX_SIDE[order[1]]),
                            (60, _fix_time(command.ts))])
            self.current = None
        else:
            raise TypeError(f"the FIX venue sends new orders and cancels, not {command!r}")
        self._sync(conn)
        return self._take_events()

    def _take_events(self) -> list:
        """Pending events, trades in trade-id order (their halves may pair out of order)."""
        events, self.pending_events = self.pending_events, []
        trades = sorted((e for e in events if type(e) is TradeExecuted), key=lambda e: e.trade_id)
        if len(trades) > 1:
            it = iter(trades)
            events = [next(it) if type(e) is TradeExecuted else e for e in events]
        return events

    def _operator(self, requests: list) -> list[dict]:
        """Requests to the server's operator socket; every one must be accepted."""
        from ccerx.gateway.control import ControlUnavailable, operator_request_sync
        try:
            answers = operator_request_sync(self.control, requests, timeout=self.timeout)
        except (ControlUnavailable, OSError) as err:
            raise FixUnavailable(f"the server's operator socket {self.control}: {err}") from None
        for request, answer in zip(requests, answers):
            if not answer.get("ok"):
                raise FixUnavailable(f"the server refused {request}: "
                                     f"{answer.get('error') or answer.get('events')}")
        return answers

    accounts_label = "brokers' books"     # what the simulation's own reconciliation compares

    def exchange_problems(self) -> list[str]:
        """Differences between the brokers' books (the shadow accounts) and the exchange's own
        accounts, asked from the server: cash, credits, fees, reservations, to the fen."""
        [answer] = self._operator([{"op": "accounts"}])
        theirs = answer["accounts"]
        problems = []
        for name, mine in ((a.account, a.to_json()) for a in self.accounts.by_id.values()):
            server = theirs.get(name)
            if server is None:
                problems.append(f"{name}: not registered at the exchange")
                continue
            for key in ("type", "cash", "cash_reserved", "fees_paid", "credits_reserved"):
                if server[key] != mine[key]:
                    problems.append(f"{name}: {key} {server[key]} at the exchange, {mine[key]} "
                                    f"in the brokers' books")
            if server.get("retired", {}) != mine.get("retired", {}):
                problems.append(f"{name}: retired {server.get('retired', {})} at the exchange, "
                                f"{mine.get('retired', {})} in the brokers' books")
            held = {k: v for k, v in server["credits"].items() if v}
            if held != {k: v for k, v in mine["credits"].items() if v}:
                problems.append(f"{name}: credits {held} at the exchange, {mine['credits']} in "
                                f"the brokers' books")
        problems += [f"{name}: at the exchange but not in this scenario"
                     for name in sorted(set(theirs) - set(self.accounts.by_id))]
        return problems

    def end_of_day(self, ts: int) -> list:
        """The server closes the day: its day orders expire (ExecType C on every broker
        session) and its VWAP closes become the new reference prices."""
        self.ts = ts
        [answer] = self._operator([{"op": "eod"}])
        self.sync_all()                       # every expiry report has arrived
        if self.halves:
            raise FixUnavailable(f"{len(self.halves)} trades reported by one side only")
        closes = []
        for e in answer["events"]:
            if e["type"] == "day_closed":
                spec = self.specs[e["instrument"]]
                close = parse_price_units(e["close"]) // spec.tick_units
                closes.append(DayClosed(e["seq"], ts, e["instrument"], close, e["volume"],
                                        parse_cny_to_fen(e["turnover"]), e["trades"]))
                self.specs[e["instrument"]] = spec.with_ref_ticks(close)
        if {c.instrument for c in closes} != set(self.specs):
            raise FixUnavailable(f"the server closed {sorted(c.instrument for c in closes)}, "
                                 f"not every credit type of the scenario")
        self.accounts.end_of_day()            # today's purchases become sellable
        for order_id in [k for k, o in self.orders.items() if o[3] <= 0 or len(o) < 6 or not o[5]]:
            del self.orders[order_id]         # finished: forget them
        return self._take_events() + closes

    def top(self, instrument: str):
        view = self.fresh.view.get(instrument, {}) if self.fresh else {}
        bids = [p for (t, p) in view if t == b"0"]
        asks = [p for (t, p) in view if t == b"1"]
        return (max(bids) if bids else None), (min(asks) if asks else None)

    def depth(self, instrument: str, levels: int = 5) -> tuple[int, int]:
        view = self.fresh.view.get(instrument, {}) if self.fresh else {}
        bids = sorted(((p, q) for (t, p), q in view.items() if t == b"0"), reverse=True)
        asks = sorted((p, q) for (t, p), q in view.items() if t == b"1")
        return sum(q for _, q in bids[:levels]), sum(q for _, q in asks[:levels])

    def issue(self, account: str, instrument: str, qty: int, ts: int) -> Deposited:
        """The registry's batch, deposited at the exchange through the operator socket."""
        self.deposits += 1
        [answer] = self._operator([{"op": "deposit", "account": account, "qty": qty,
                                    "deposit_id": f"SIM-{self.run_id}-{self.deposits}",
                                    "instrument": instrument}])
        [e] = answer["events"]
        credits = self.accounts.by_id[account].credits
        credits[instrument] = credits.get(instrument, 0) + qty
        return Deposited(e["seq"], ts, e["deposit_id"], e["account"], e["asset"], e["amount"])

    def deposit_lots(self, requests: list, ts: int) -> list:
        """Lots moved in through the operator socket, in one exchange of request lines:
        [(account, credit_type, project, vintage, qty, list symbol | None, declared price
        units | None)] -> Deposited (and the listings' InstrumentDefined) events."""
        lines = []
        for account, credit_type, project, vintage, qty, symbol, price in requests:
            self.deposits += 1
            line = {"op": "deposit", "deposit_id": f"SIM-{self.run_id}-{self.deposits}",
                    "account": account, "credit_type": credit_type, "project": project,
                    "vintage": vintage, "qty": qty}
            if symbol is not None:
                line["list"] = {"symbol": symbol, "ref_price": format_price_units(price)}
            lines.append(line)
        events, listed = [], []
        for answer in self._operator(lines):
            for e in answer["events"]:
                if e["type"] == "deposited":
                    lot = Lot(e["credit_type"], e["project"], e["vintage"])
                    self.accounts.register_lot(lot)
                    credits = self.accounts.by_id[e["account"]].credits
                    credits[e["asset"]] = credits.get(e["asset"], 0) + e["amount"]
                    events.append(Deposited(e["seq"], ts, e["deposit_id"], e["account"],
                                            e["asset"], e["amount"], *lot))
                elif e["type"] == "instrument":
                    spec = _spec_of(e)
                    self.specs[spec.symbol] = spec
                    listed.append(spec.symbol)
                    events.append(InstrumentDefined(e["seq"], ts, spec))
        if listed:
            self._subscribe(listed)
        return events

    def retire(self, retire_id: str, account: str, key: str, qty: int, purpose: str, ts: int):
        """The operator's retirement (注销) of `qty` t of holding `key` of `account`."""
        project, vintage = self.accounts.lot_of(key)
        line = {"op": "retire", "retire_id": f"SIM-{self.run_id}-{retire_id}",
                "account": account, "qty": qty, "purpose": purpose}
        line.update({"instrument": key} if project is None else
                    {"project": project, "vintage": vintage})
        [answer] = self._operator([line])
        [e] = answer["events"]
        self.accounts.retire(self.accounts.by_id[account], key, qty)
        return Retired(e["seq"], ts, e["retire_id"], e["account"], e["asset"], e["qty"],
                       e["purpose"], e["certificate"], e.get("credit_type"), e.get("project"),
                       e.get("vintage"), e.get("owner"))

    def close(self) -> None:
        for conn in self.conns.values():
            try:
                conn.send("5", [])
                conn.sock.close()
            except OSError:
                pass


def _key(project, vintage, spec) -> str:
    return spec.holding if project is None else f"{project}@{vintage}"


def _delivered(msg) -> tuple:
    """The lots a fill's trade delivered (NoUnderlyings, gateway/fix/lots.py): ((project |
    None, vintage | None, t), ...); a default lot's UnderlyingSymbol is the contract's."""
    out, key = [], None
    for tag, value in msg.pairs:
        tag = int(tag)
        if tag == 311:
            key = value.decode()
        elif tag == 879 and key is not None:
            project, at, vintage = key.rpartition("@")
            out.append((project, int(vintage), int(value)) if at else (None, None, int(value)))
            key = None
    return tuple(out)


def _spec_of(event: dict) -> InstrumentSpec:
    """A listing's spec from the operator socket's `instrument` event."""
    fields = {k: v for k, v in event.items() if k not in ("type", "seq", "ts", "op")}
    tradable_from = fields.pop("tradable_from", 0)
    return InstrumentSpec.from_fields(**fields).with_tradable_from(tradable_from)


def _fix_time(ts) -> str:
    seconds, ns = divmod(ts or 0, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y%m%d-%H:%M:%S")
    return f"{stamp}.{ns // 1_000_000:03d}"
