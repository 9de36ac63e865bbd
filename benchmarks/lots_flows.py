"""Seeded flows over credits as lots (`ccerx gen-flow --lots N`): project-vintage listings
beside the four type contracts, over several trading days.

Where `flows.py` draws a one-day order flow without looking at a book (vectorised, for
volume), this generator drives agents that watch the market: every command it writes is
applied at once to an engine of the same rule profile, and the next command is chosen from
what that engine then shows (best levels, resting listings, free credits). So takes find a
level to take, retirements name credits the holder really has free, and under `cbeex-2023`
each account keeps to one side of each product, so the flow is mostly accepted. The engine
is deterministic and so is the random generator: the same seed, size and parameters give
the same bytes.

What a flow holds, in order:
  - day 0, before the open: one `instrument` line per listing (N per credit type, each a
    lot of one project and vintage, declared initial price = the contract's reference plus
    a premium for recent vintages), and lot deposits (issuances transferred in from the
    registry): each project owner holds its own projects' lots, several projects and
    vintages per type, some of them never listed (they trade only through the contract);
    investment institutions get transfers in too;
  - on day 2 (N > 0), one new project per type is moved in with `"list"`: listed on its first
    transfer in (Art.17), tradable from the next trading day;
  - each trading day, in the sessions 09:30-11:30 and 13:00-15:00 Beijing time: limit
    sells (listings, 挂牌) by holders of their own lots and of the type contract; limit buys
    and takes (摘牌; some aimed at one listing at the best level with `"target"`) by
    emitters, who prefer recent vintages; cancels; retirements (注销) by emitters of lots they
    bought on an earlier day; a share `special_share` of IOC, FOK, market orders and amends
    (usual under `continuous`, each rejected `not_permitted` under `cbeex-2023`);
  - holding-period probes: a few accounts buy a product on day D and try to sell it on each
    of days D+1 .. D+5 (under `cbeex-2023` the first four are `holding_period`, the fifth is
    accepted; under `continuous` all are accepted);
  - the day's close: `{"op":"eod"}` at 15:00.

The accounts file (`lot_accounts_file`) gives cash only: every credit comes in as a lot.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ccerx.engine.core.calendar import TradingCalendar
from ccerx.engine.core.events import TradeExecuted
from ccerx.engine.core.exchange import Exchange
from ccerx.engine.core.lots import STANDARD_CONTRACTS, lot_key
from ccerx.engine.core.rules import profile
from ccerx.engine.core.types import DEFAULT_INSTRUMENTS, ParticipantType, Side
from ccerx.engine.formats.config import accounts_from_json
from ccerx.engine.formats.ndjson import parse_command

from ccerx.benchmarks.flows import account_names, account_types

FIRST_DATE = dt.date(2024, 1, 22)          # a Monday
SECTOR = {"afforestation": 14, "solar_thermal": 1, "offshore_wind": 5, "mangrove": 15}
VINTAGES = (2020, 2021, 2022, 2023, 2024)
PURPOSES = ("2024年度碳排放配额清缴抵销", "voluntary offset of 2024 scope 1 emissions",
            "大型活动碳中和")
MINUTE_NS = 60 * 1_000_000_000
SESSION_NS = 240 * MINUTE_NS               # 4 trading hours a day
ORDER_ID_PREFIX = "L"


@dataclass(frozen=True)
class LotFlowParams:
    listings_per_type: int = 3
    rules: str = "continuous"
    days: int = 10
    accounts: int = 60
    probes: int = 4                        # holding-period probe accounts
    cancel_share: float = 0.22
    retire_share: float = 0.01
    special_share: float = 0.02            # IOC / FOK / market / amend
    take_share: float = 0.35               # of buys (and 0.15 of sells)
    target_share: float = 0.3              # of takes: aimed at one listing at the best level
    marketable_share: float = 0.05         # of limit orders: priced through the other side
    listing_share: float = 0.5             # of orders: on a listing (else a type contract)

    def __post_init__(self):
        if self.listings_per_type < 0 or self.days < 1 or self.accounts < 20:
            raise ValueError("--lots must be >= 0, days >= 1 and accounts >= 20")
        profile(self.rules)      # ValueError naming the known profiles

    def to_json(self) -> dict:
        return asdict(self)


def lot_accounts_file(params: LotFlowParams = LotFlowParams()) -> dict:
    """Accounts for `ccerx replay --accounts` of a lots flow: cash only (credits arrive as
    lot deposits in the flow)."""
    rows = []
    for name, ptype in zip(account_names(params.accounts), account_types(params.accounts)):
        cash = {ParticipantType.KEY_EMISSION_UNIT: "2000000000.00",
                ParticipantType.PROJECT_OWNER: "20000000.00"}.get(ptype, "1000000000.00")
        rows.append({"account": name, "type": ptype.value, "cash": cash, "credits": {}})
    return {"fee_rate": "0.006", "accounts": rows}


def _line(obj: dict) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


class LotFlowGenerator:
    """Writes the lines of one lots flow (see the module docstring) through `emit`."""

    def __init__(self, seed: int, params: LotFlowParams = LotFlowParams()):
        self.p = params
        self.rng = np.random.default_rng(seed)
        self.rules = profile(params.rules)
        self.exchange = Exchange(DEFAULT_INSTRUMENTS, accounts_from_json(lot_accounts_file(params)),
                                 rules=self.rules)
        self.calendar = TradingCalendar()
        self.dates = self.calendar.trading_dates(FIRST_DATE, params.days)
        names, types = account_names(params.accounts), account_types(params.accounts)
        by_type = {t: [n for n, tt in zip(names, types) if tt is t] for t in ParticipantType}
        others = by_type[ParticipantType.OTHER_ORGANISATION]
        self.probers = others[:min(params.probes, len(others))]
        self.owners = by_type[ParticipantType.PROJECT_OWNER]
        self.emitters = by_type[ParticipantType.KEY_EMISSION_UNIT]
        self.institutions = by_type[ParticipantType.INVESTMENT_INSTITUTION]
        self.buyers = self.emitters + [a for a in others if a not in self.probers]
        self.contracts = {kind: symbol for symbol, kind in STANDARD_CONTRACTS.items()}
        self.mid: dict[str, int] = {s.symbol: s.ref_ticks for s in DEFAULT_INSTRUMENTS}
        self.lines: list[str] = []
        self.next_oid = self.next_deposit = self.next_retire = 0
        self.sellers: dict[str, list[str]] = {}   # instrument -> accounts that sell it
        self.probe_state: dict[str, list] = {}    # prober -> [instrument, day bought, tries]
        self.trades = 0
        self._tradable_key = None
        self._tradable_cache: tuple = ()

    # ------------------------------------------------------------------ writing
    def emit(self, obj: dict) -> list:
        line = _line(obj)
        self.lines.append(line)
        events = self.exchange.apply(parse_command(line))
        for event in events:
            if type(event) is TradeExecuted:
                self.trades += 1
                state = self.probe_state.get(event.buy_account)
                if state is not None and state[1] is None and event.instrument == state[0]:
                    state[1] = self.exchange.closes
        return events

    def _oid(self) -> str:
        self.next_oid += 1
        return f"{ORDER_ID_PREFIX}{self.next_oid}"

    def _price(self, spec, ticks: int) -> str:
        return spec.ticks_to_text(int(min(max(ticks, spec.min_ticks), spec.max_ticks)))

    def _qty(self, scale: float = 1.0) -> int:
        q = int(50 * scale * (1.0 - self.rng.random()) ** (-1 / 1.5))
        q = (q // 100) * 100 if q >= 1000 else ((q // 10) * 10 if q >= 100 else q)
        return max(1, min(q, 50_000))

    # ------------------------------------------------------------------ day 0 and issuances
    def _deposit(self, ts, account, credit_type, project, vintage, qty, listing=None):
        self.next_deposit += 1
        obj = {"op": "deposit", "ts": ts, "deposit_id": f"ISS-{self.next_deposit}",
               "account": account, "credit_type": credit_type, "project": project,
               "vintage": vintage, "qty": qty}
        if listing is not None:
            obj["list"] = listing
        self.emit(obj)

    def _listing_price(self, credit_type: str, vintage: int) -> int:
        base = self.exchange.specs[self.contracts[credit_type]].ref_ticks
        return base + base * (vintage - 2022) * 2 // 100     # +2% a year of recency

    def opening(self, ts: int) -> None:
        rng, n = self.rng, self.p.listings_per_type
        project_no = 0
        self.new_projects = []
        for credit_type in SECTOR:
            contract = self.contracts[credit_type]
            lots = []
            for k in range(max(2, (n + 1) // 2)):
                project_no += 1
                project = f"CCER-{SECTOR[credit_type]:02d}-2024-{project_no:04d}"
                owner = self.owners[(project_no - 1) % len(self.owners)]
                first = int(rng.integers(0, len(VINTAGES) - 1))
                for vintage in VINTAGES[first:first + int(rng.integers(2, 4))]:
                    lots.append((project, vintage, owner, project_no))
            order = rng.permutation(len(lots))
            listed = [lots[i] for i in order[:n]]
            for project, vintage, _, number in sorted(listed):
                symbol = f"{contract[5:]}-{number:04d}-{vintage}"
                self.emit({"op": "instrument", "ts": ts, "symbol": symbol,
                           "credit_type": credit_type, "project": project, "vintage": vintage,
                           "ref_price": self.exchange.specs[contract].ticks_to_text(
                               self._listing_price(credit_type, vintage))})
                self.mid[symbol] = self.exchange.specs[symbol].ref_ticks
            for project, vintage, owner, _ in lots:
                for _ in range(int(rng.integers(1, 4))):
                    self._deposit(ts, owner, credit_type, project, vintage,
                                  int(rng.integers(20, 200)) * 1000)
            for holder in self.institutions:   # small transfers in of a few lots each:
                picks = rng.permutation(len(lots))[:int(rng.integers(0, 4))]  # (contract
                for i in sorted(picks.tolist()):                # sells then span lots)
                    project, vintage, _, _ = lots[i]
                    self._deposit(ts, holder, credit_type, project, vintage,
                                  int(rng.integers(1, 15)) * 100)
            for symbol, spec in self.exchange.specs.items():
                if spec.credit_type == credit_type:     # its contract and listings
                    self.sellers[symbol] = [a for a in self.owners + self.institutions
                                            if self._free(a, symbol) > 0]
            if n:
                project_no += 1
                self.new_projects.append((credit_type, f"CCER-{SECTOR[credit_type]:02d}-2024-"
                                          f"{project_no:04d}", project_no,
                                          self.owners[(project_no - 1) % len(self.owners)]))

    def issue_new_projects(self, ts: int) -> None:
        """Day 2: one new project per type moves in and is listed on that transfer (Art.17)."""
        for credit_type, project, number, owner in self.new_projects:
            contract = self.contracts[credit_type]
            symbol = f"{contract[5:]}-{number:04d}-2024"
            price = self.exchange.specs[contract].ticks_to_text(
                self._listing_price(credit_type, 2024))
            self._deposit(ts, owner, credit_type, project, 2024,
                          int(self.rng.integers(50, 200)) * 1000,
                          {"symbol": symbol, "ref_price": price})
            if symbol in self.exchange.specs:
                self.mid[symbol] = self.exchange.specs[symbol].ref_ticks
                self.sellers[symbol] = [owner]
                self.sellers[contract] = sorted(set(self.sellers[contract]) | {owner})

    # ------------------------------------------------------------------ state the agents read
    def _free(self, account_id: str, symbol: str, held_back_too: bool = False) -> int:
        """Tonnes the account may sell through `symbol` now (`held_back_too`: counting
        credits the Art.29 holding period holds back, which a probe tries to sell)."""
        accounts, spec = self.exchange.accounts, self.exchange.specs[symbol]
        account = accounts.get(account_id)
        free = account.credits_retirable if held_back_too else account.credits_sellable
        if spec.kind == "listing":
            return free(spec.holding)
        return sum(free(key) for key in account.credits
                   if key in accounts.lots and spec.eligible(accounts.lots[key]))

    def _tradable(self) -> list[str]:
        """The instruments that trade today (a new listing from its tradable day on), with
        the listings, the contracts and the buyers' vintage weights (cached for the day)."""
        key = (self.exchange.closes, len(self.exchange.specs))
        if self._tradable_key != key:
            closes, specs = key[0], self.exchange.specs
            tradable = [s for s, spec in specs.items() if spec.tradable_from <= closes]
            listings = [s for s in tradable if specs[s].kind == "listing"]
            weights = np.array([(specs[s].vintage - 2018) ** 2 for s in listings], float)
            self._tradable_cache = (tradable, listings,
                                    [s for s in tradable if specs[s].kind != "listing"],
                                    weights / weights.sum() if listings else weights)
            self._tradable_key = key
        return self._tradable_cache[0]

    def _pick_instrument(self, tradable: list[str], buying: bool) -> str:
        rng = self.rng
        _, listings, contracts, weights = self._tradable_cache
        if listings and rng.random() < self.p.listing_share:
            if not buying:
                return listings[int(rng.integers(0, len(listings)))]
            return listings[int(rng.choice(len(listings), p=weights))]   # recent first
        return contracts[int(rng.integers(0, len(contracts)))]

    def _step_mid(self, symbol: str) -> int:
        spec = self.exchange.specs[symbol]
        mid = self.mid[symbol]
        if self.rng.random() < 0.05:
            mid += 1 if self.rng.random() < 0.5 else -1
        mid = min(max(mid, spec.min_ticks + 5), spec.max_ticks - 5)
        self.mid[symbol] = mid
        return mid

    # ------------------------------------------------------------------ one event
    def event(self, ts: int) -> None:
        rng, p = self.rng, self.p
        u = rng.random()
        if u < p.cancel_share and self._cancel(ts):
            return
        u -= p.cancel_share
        if u < p.special_share and self._special(ts):
            return
        u -= p.special_share
        if u < p.retire_share and self._retire(ts):
            return
        self._order(ts, buying=rng.random() < 0.55)

    def _resting(self) -> list:
        return [o for book in self.exchange.books.values() for o in book.orders.values()]

    def _cancel(self, ts: int) -> bool:
        resting = self._resting()
        if not resting:
            return False
        order = resting[int(self.rng.integers(0, len(resting)))]
        self.emit({"op": "cancel", "ts": ts, "order_id": order.order_id})
        return True

    def _retire(self, ts: int) -> bool:
        rng, accounts = self.rng, self.exchange.accounts
        emitter = self.emitters[int(rng.integers(0, len(self.emitters)))]
        account = accounts.get(emitter)
        # (what it may retire: credits the Art.29 holding period holds back from selling too)
        free = [(key, account.credits_retirable(key)) for key in sorted(account.credits)
                if key in accounts.lots and account.credits_retirable(key) > 0]
        if not free:
            return False
        key, qty = free[int(rng.integers(0, len(free)))]
        lot = accounts.lots[key]
        self.next_retire += 1
        self.emit({"op": "retire", "ts": ts, "retire_id": f"R-{self.next_retire}",
                   "account": emitter, "project": lot.project, "vintage": lot.vintage,
                   "qty": max(1, qty // int(rng.integers(1, 4))),
                   "purpose": PURPOSES[int(rng.integers(0, len(PURPOSES)))]})
        return True

    def _special(self, ts: int) -> bool:
        """IOC, FOK or market order, or an amend (not_permitted under cbeex-2023)."""
        rng = self.rng
        kind = int(rng.integers(0, 4))
        if kind == 3:
            resting = self._resting()
            if not resting:
                return False
            order = resting[int(rng.integers(0, len(resting)))]
            spec = self.exchange.specs[self._book_of(order.order_id)]
            self.emit({"op": "amend", "ts": ts, "order_id": order.order_id,
                       "qty": order.filled_qty + max(1, order.open_qty // 2)} if rng.random() < 0.6 else
                      {"op": "amend", "ts": ts, "order_id": order.order_id,
                       "price": self._price(spec, order.price + (1 if order.side is Side.SELL
                                                                 else -1))})
            return True
        symbol = self._pick_instrument(self._tradable(), True)
        account = self.buyers[int(rng.integers(0, len(self.buyers)))]
        spec = self.exchange.specs[symbol]
        obj = {"op": "new", "ts": ts, "order_id": self._oid(), "account": account,
               "instrument": symbol, "side": "buy"}
        if kind == 0:
            obj |= {"type": "market", "tif": "ioc", "qty": self._qty(0.5)}
        else:
            obj |= {"type": "limit", "tif": "ioc" if kind == 1 else "fok",
                    "price": self._price(spec, self.mid[symbol] + 1), "qty": self._qty()}
        self.emit(obj)
        return True

    def _book_of(self, order_id: str) -> str:
        return next(s for s, b in self.exchange.books.items() if order_id in b.orders)

    def _order(self, ts: int, buying: bool) -> None:
        rng, p = self.rng, self.p
        tradable = self._tradable()
        symbol = self._pick_instrument(tradable, buying)
        spec = self.exchange.specs[symbol]
        book = self.exchange.books[symbol]
        if buying:
            account = self.buyers[int(rng.integers(0, len(self.buyers)))]
            qty = self._qty()
        else:
            sellers = [a for a in self.sellers.get(symbol, ()) if self._free(a, symbol) > 0]
            if not sellers:
                return self._order(ts, True)
            account = sellers[int(rng.integers(0, len(sellers)))]
            qty = min(self._qty(2.0), self._free(account, symbol))
            if (spec.kind == "contract" and account in self.institutions
                    and rng.random() < 0.3):   # an institution sells all it holds of the
                qty = self._free(account, symbol)          # type: its lots, oldest first
        mid = self._step_mid(symbol)
        obj = {"op": "new", "ts": ts, "order_id": self._oid(), "account": account,
               "instrument": symbol, "side": "buy" if buying else "sell"}
        other = book.best_ask() if buying else book.best_bid()
        if other is not None and rng.random() < (p.take_share if buying else p.take_share / 2):
            obj["type"] = "take"
            if rng.random() < p.target_share:
                level = next(book.opposite(Side.BUY if buying else Side.SELL).iter_levels())
                obj["target"] = level.head.order_id
            obj["qty"] = qty
            self.emit(obj)
            return
        distance = int(np.searchsorted(_DIST_CDF, rng.random(), side="right")) + 1
        if rng.random() < p.marketable_share:
            distance = -int(rng.integers(0, 3))
        ticks = mid - distance if buying else mid + distance
        obj |= {"type": "limit", "price": self._price(spec, ticks), "qty": qty}
        self.emit(obj)

    def _probe(self, ts: int, account: str) -> None:
        """A holding-period probe: buy a product once, then try to sell it daily."""
        state = self.probe_state.get(account)
        closes = self.exchange.closes
        if state is None:
            tradable = sorted(self._tradable())
            symbol = tradable[(self.probers.index(account) * 3) % len(tradable)]
            self.probe_state[account] = state = [symbol, None, 0]
        symbol, bought, tries = state
        book = self.exchange.books[symbol]
        if bought is None:
            if book.best_ask() is not None:
                self.emit({"op": "new", "ts": ts, "order_id": self._oid(), "account": account,
                           "instrument": symbol, "side": "buy", "type": "take",
                           "qty": self._qty()})
            return
        if closes == bought or tries >= 5:
            return
        free = self._free(account, symbol, held_back_too=True)
        if free <= 0:
            state[2] = 5
            return
        state[2] += 1
        spec = self.exchange.specs[symbol]
        self.emit({"op": "new", "ts": ts, "order_id": self._oid(), "account": account,
                   "instrument": symbol, "side": "sell", "type": "limit",
                   "price": self._price(spec, self.mid[symbol] + 2), "qty": free})

    # ------------------------------------------------------------------ driving
    def day_times(self, day: int, count: int) -> list[int]:
        date = self.dates[day]
        offsets = np.sort(self.rng.integers(1, SESSION_NS, count))
        morning = self.calendar.at(date, 9 * 60 + 30)
        afternoon = self.calendar.at(date, 13 * 60) - 120 * MINUTE_NS
        return [int(morning + o if o < 120 * MINUTE_NS else afternoon + o) for o in offsets]

    def generate(self, n_lines: int, progress: Optional[Callable[[int], None]] = None):
        """Yield the flow's lines (without newlines): exactly n_lines of them. Every event
        writes one line; the day's close is kept back from each day's share."""
        p = self.p
        self.opening(self.calendar.at(self.dates[0], 9 * 60))
        opening = len(self.lines)
        if n_lines < opening + 2 * p.days:
            raise ValueError(f"a lots flow of {p.days} days with {p.listings_per_type} "
                             f"listings per credit type needs at least "
                             f"{opening + 2 * p.days} commands (--commands)")
        written = 0
        for day in range(p.days):
            if day == 2 and p.listings_per_type:
                self.issue_new_projects(self.calendar.at(self.dates[day], 9 * 60 + 15))
            closes_left = p.days - day                  # this day's close and the later ones
            room = n_lines - written - len(self.lines) - closes_left
            count = room if day == p.days - 1 else max(0, room // closes_left)
            times = self.day_times(day, count)
            probes: dict[int, list[str]] = {}
            if day >= 1:
                for account, at in zip(self.probers,
                                       self.rng.integers(0, max(count, 1), len(self.probers))):
                    probes.setdefault(int(at), []).append(account)
            for i, ts in enumerate(times):
                accounts = probes.get(i, ())
                for account in accounts:
                    if written + len(self.lines) < n_lines - closes_left:
                        self._probe(ts, account)
                if written + len(self.lines) < n_lines - closes_left:
                    self.event(ts)
                lines = self._drain()
                written += len(lines)
                yield from lines
                if progress is not None and not i % 1024:
                    progress(written)
            while day == p.days - 1 and written + len(self.lines) < n_lines - 1:
                self.event(times[-1] if times else self.calendar.at(self.dates[day], 14 * 60))
                lines = self._drain()      # (probes took lines of the day's share: fill up)
                written += len(lines)
                yield from lines
            self.emit({"op": "eod", "ts": self.calendar.at(self.dates[day], 15 * 60)})
            lines = self._drain()
            written += len(lines)
            yield from lines
        if written != n_lines:
            raise AssertionError(f"wrote {written} lines, not {n_lines}")
        if progress is not None:
            progress(written)

    def _drain(self) -> list[str]:
        lines, self.lines = self.lines, []
        return lines


_d = np.arange(1, 21, dtype=float) ** -0.52
_DIST_CDF = np.cumsum(_d / _d.sum())


def write_lot_flow(path, seed: int, n_lines: int, params: LotFlowParams = LotFlowParams(),
                   progress: Optional[Callable[[int], None]] = None) -> dict:
    """Write a lots flow as NDJSON; returns a summary (counts per op)."""
    gen = LotFlowGenerator(seed, params)
    counts: dict[str, int] = {}
    with open(path, "w", encoding="utf-8") as out:
        for line in gen.generate(n_lines, progress):
            out.write(line + "\n")
            op = line[7:line.index('"', 7)]
            counts[op] = counts.get(op, 0) + 1
    return {"commands": sum(counts.values()), "counts": counts, "trades": gen.trades}


def write_lot_accounts(path, params: LotFlowParams = LotFlowParams()) -> None:
    Path(path).write_text(json.dumps(lot_accounts_file(params), indent=1) + "\n")
