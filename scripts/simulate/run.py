"""The day loop: build the population from a scenario, trade the days, collect the record.

Theory of operation. A `Session` is the market as the agents see it (`m` in agents.py).
Each trading day: the registry credits the day's issuance; then for every minute of the
two sessions a seeded random set of agents is activated (more at the open and the close)
and each sends orders through the venue; the book is sampled once a minute; at 15:00 the
venue closes the day (`EndOfDay`: day orders expire, the VWAP close becomes tomorrow's
reference and band, today's purchases become sellable) and the settlement is reconciled
against the exchange's accounts. Every event goes through `dispatch()`; every trade goes
through `self.settlement.trade()` (the settlement seam, see settle.py).

Lots (Art.10, scenario `[lots]`, on by default). Every credit is of one lot (credit type,
project, vintage). Each project owner owns projects (the scenario's `[[project]]` rows of its
type, else one generated project with consecutive vintages in `lots.vintages`); before the
first open it moves in every lot of its projects from the registry, declaring a listing per
lot (`<TYPE>-<nnnn>-<vintage>`, its declared price the first benchmark; under cbeex-2023 it
trades from the next trading day, Art.17), and issuance later adds to its newest vintage.
Market makers' and noise traders' opening inventories are lots of those projects, moved in
the same way (no listing). Contracts deliver lots by the engine's allocation order; every
trade's delivered lots are kept (`trade_lots`). After each close every emitter retires
(注销, an engine `Retire` per lot) the credits delivered to it, up to its need: what it buys
is for offsetting, not for resale.

Determinism: one `random.Random(seed)` for the population and one for the run; agents and
instruments are visited in list order, never set order; the clock is simulated. Same
scenario and seed -> the same commands -> the same trades.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field

from ccerx.engine.core.commands import CancelOrder, NewOrder
from ccerx.engine.core.lots import lot_key
from ccerx.engine.core.rules import CONTINUOUS, RuleProfile
from ccerx.engine.core.events import (DayClosed, Deposited, InstrumentDefined, OrderAccepted,
                                      OrderCancelled, OrderRejected, Retired, TradeExecuted)
from ccerx.engine.core.risk import PPM, Account, Accounts
from ccerx.engine.core.types import CancelReason, ParticipantType, TimeInForce, parse_decimal_units

from ccerx.scripts.simulate.agents import (Emitter, Live, MarketMaker, NoiseTrader, Project,
                                           ProjectOwner)
from ccerx.scripts.simulate.calendar import MINUTES_PER_DAY, NS_PER_MIN, SimulatedDays
from ccerx.scripts.simulate.scenario import Scenario
from ccerx.scripts.simulate.settle import (LEDGER_WITHOUT_LOTS, LedgerSettlement, Reconciliation,
                                           Settlements, TradeLedger, ledger_carries_lots)
from ccerx.scripts.simulate.venue import InProcessVenue

EOD = CancelReason.EOD
# made-up registry sector numbers of the generated project ids (CCER-<sector>-2024-<nnnn>)
SECTOR = {"afforestation": "14", "solar_thermal": "05", "offshore_wind": "07", "mangrove": "15"}


@dataclass
class DayRecord:
    day: int
    date: str
    closes: dict[str, DayClosed] = field(default_factory=dict)
    expired: int = 0                       # day orders cancelled at the close
    resting_at_close: int = 0              # orders resting just before the close
    emitter_bought: dict[str, int] = field(default_factory=dict)   # cumulative, per type
    reconciliation: Reconciliation | None = None


@dataclass
class SimResult:
    scenario: Scenario
    calendar: SimulatedDays
    agents: list
    trades: list            # (trade_id, day, ts, instrument, price, qty, buy_acct, sell_acct, aggressor, buy_fee, sell_fee)
    samples: dict           # instrument -> list of (day, minute, bid, ask, bid_depth, ask_depth)
    impacts: dict           # instrument -> list of (sign, qty, mid_before_x2, mid_after_x2)
    days: list[DayRecord]
    opening: dict           # account -> (cash fen, {instrument: t})
    issuance: list          # (day, instrument, account, qty, kind)
    specs: dict             # instrument -> spec at the start
    final_specs: dict       # instrument -> spec after the last close
    closing: dict = field(default_factory=dict)   # account -> (cash fen, {instrument: t})
    commands: int = 0
    rejects: dict = field(default_factory=dict)
    wall_s: float = 0.0
    mode: str = "in-process"
    lots: bool = False                # credits traded as lots
    trade_lots: dict = field(default_factory=dict)    # trade id -> TradeExecuted.lots
    deposits: list = field(default_factory=list)      # Deposited events (lots and batches)
    retirements: list = field(default_factory=list)   # Retired events
    lot_types: dict = field(default_factory=dict)     # lot key -> credit type
    contracts: dict = field(default_factory=dict)     # credit type -> its contract symbol
    settlement_note: str = ""         # what the settlement check could not cover, and why

    @property
    def reconciled(self) -> bool:
        return all(d.reconciliation is not None and d.reconciliation.ok for d in self.days)

    def type_of_lot(self, key: str) -> str | None:
        """The contract symbol of a holding key's credit type (a pooled key is its own)."""
        kind = self.lot_types.get(key)
        return key if kind is None else self.contracts.get(kind)


def _u_shape(minute: int) -> float:
    """Intraday activity weight, mean ~1: busier after the open and before the close."""
    x = (minute + 0.5) / MINUTES_PER_DAY * 2 - 1
    return 0.64 + 1.08 * x * x


class Session:
    def __init__(self, scenario: Scenario, venue=None, settlement=None, progress=None,
                 ledger_path=None, venue_factory=None, rules: RuleProfile = CONTINUOUS):
        self.scenario = scenario
        self.rules = rules            # the exchange's rules: the agents use what they allow
        self.calendar = SimulatedDays(scenario.start_date, scenario.days)
        self.build_rng = random.Random(f"population:{scenario.seed}")
        self.rng = random.Random(f"run:{scenario.seed}")
        self.symbols = scenario.symbols
        cfg = scenario.lots
        self.lots = cfg["enabled"]
        self.list_share, self.named_share = cfg["list_share"], cfg["named_share"]
        self.oldest_vintage = cfg["vintages"][0]
        self.vintage_premium = cfg["vintage_premium"]
        # instrument -> its credit type's contract (a contract is its own); listings join
        # as they are defined
        self.type_of = {s: s for s in self.symbols}
        self.contracts: dict[str, str] = {}      # credit type -> its (first) contract
        for spec in scenario.instruments:
            if spec.kind == "contract":
                self.contracts.setdefault(spec.credit_type, spec.symbol)
        self.listing_vintage: dict[str, int] = {}          # listing symbol -> vintage
        self.listings: dict[str, list[str]] = {s: [] for s in self.symbols}   # most recent first
        self.lot_types: dict[str, str] = {}
        self.opening_lots: list = []     # (agent, Project, vintage, qty, list?) moved in first
        self.specs_at_start = {spec.symbol: spec for spec in scenario.instruments}
        self.project_count = 0
        self.listed_specs: dict = {}     # listing symbol -> its spec as declared
        self.agents, self.accounts = self._population()
        self.by_account = {a.account: a for a in self.agents}
        self.fee_ppm = scenario.fee_ppm
        if venue is None and venue_factory is None:
            venue = InProcessVenue(scenario.instruments, self.accounts, scenario.fee_ppm, rules)
        self.venue = venue
        self.specs = venue.specs if venue is not None else {s.symbol: s for s in scenario.instruments}
        if settlement is None:
            settlement = TradeLedger(scenario.fee_ppm)
            if ledger_path is not None and self.lots and not ledger_carries_lots():
                self.settlement_note = LEDGER_WITHOUT_LOTS
            elif ledger_path is not None:     # and the exchange's own settlement path
                settlement = Settlements(settlement, LedgerSettlement(ledger_path, self.accounts,
                                                                      rules=rules))
        self.settlement = settlement
        self.progress = progress
        self.last_price = {s: self.specs[s].ref_ticks for s in self.symbols}
        # the fundamental value of each credit type, as a multiple of its opening reference
        # price: a mean-reverting random walk in logs (see `_move_values`) moved by news,
        # issuance supply and an optional drift; every agent's valuation is relative to it
        self.value = {s: 1.0 for s in self.symbols}
        self.log_value = {s: 0.0 for s in self.symbols}
        self.anchor = {s: self.specs[s].ref_ticks for s in self.symbols}
        f = scenario.fundamental
        self.value_step = f["daily_volatility"] / MINUTES_PER_DAY ** 0.5
        self.reversion = f["mean_reversion_per_day"] / MINUTES_PER_DAY
        self.drift = f["drift_per_day"] / MINUTES_PER_DAY
        self.news_chance = f["news_per_day"] / MINUTES_PER_DAY
        self.day = 0
        self.minute = 0
        self.commands = 0
        self.rejects: dict[str, int] = {}
        self.trades: list = []
        self.trade_lots: dict = {}
        self.deposits: list = []
        self.retirements: list = []
        self.retire_count = 0
        self.settlement_note = ""
        self.samples = {s: [] for s in self.symbols}
        self.impacts = {s: [] for s in self.symbols}
        self.issuance: list = []
        self.wakeups: dict[int, list] = {}    # minute of today -> agents that asked to act
        self.days: list[DayRecord] = []
        self.opening = {a.account: (a.cash, dict(a.credits)) for a in self.accounts.by_id.values()}
        for account_id, (cash, credits) in self.opening.items():
            self.settlement.open(account_id, cash, credits)
        self.venue_factory = venue_factory

    # ------------------------------------------------------------------ population
    def _population(self):
        sc, rng, symbols = self.scenario, self.build_rng, self.scenario.symbols
        specs = {s.symbol: s for s in sc.instruments}
        counts = sc.agents
        accounts = Accounts(fee_ppm=sc.fee_ppm)
        agents = []

        def add(agent, cash_fen, credits):
            agents.append(agent)
            accounts.add(Account(agent.account, ParticipantType(agent.participant_type), None,
                                 cash_fen, credits={k: v for k, v in credits.items() if v}))

        cfg = sc.emitters
        headroom = parse_decimal_units(str(cfg["cash_headroom"]), PPM)
        deadline = (cfg["deadline_day"] or sc.days) - 1
        for n in range(counts["emitters"]):
            verified = rng.randint(*cfg["verified_emissions_t"])
            requested = int(verified * rng.uniform(*cfg["need_share"]))
            # the types it accepts: cheaper types more often (weight ~ reference price^-k)
            pool = list(symbols)
            kinds = []
            for _ in range(min(len(symbols), rng.randint(*cfg["types_per_emitter"]))):
                weights = [specs[k].ref_ticks ** -cfg["price_sensitivity"] for k in pool]
                kinds.append(pool.pop(rng.choices(range(len(pool)), weights)[0]))
            weights = [rng.random() + 0.2 for _ in kinds]
            needs = {k: int(requested * w / sum(weights)) for k, w in zip(kinds, weights)}
            values = {k: int(specs[k].ref_ticks * rng.uniform(*cfg["valuation"])) for k in kinds}
            agent = Emitter(f"E{n:04d}", f"EMIT{n:04d}", cfg["activity_per_day"], verified, needs,
                            deadline, tuple(cfg["child_t"]), values, cfg["deadline_premium"],
                            tuple(cfg["burst"]))
            value = sum(q * specs[k].ref_ticks * specs[k].tick_fen for k, q in agent.needs.items())
            add(agent, value * headroom // PPM + 100_00, {})
        cfg = sc.project_owners
        owners = []
        for n in range(counts["project_owners"]):
            symbol = symbols[n % len(symbols)]
            initial = rng.randint(*cfg["initial_t"])
            agent = ProjectOwner(f"P{n:03d}", f"PROJ{n:03d}", cfg["activity_per_day"], symbol,
                                 initial, tuple(cfg["slice"]), cfg["discount_per_log_inventory"],
                                 cfg["dump_pressure"],
                                 int(specs[symbol].ref_ticks * rng.uniform(*cfg["valuation"])),
                                 tuple(cfg["burst"]))
            owners.append(agent)
            add(agent, cfg["cash_cny"] * 100, {} if self.lots else {symbol: initial})
        projects = self._projects(owners) if self.lots else {}
        cfg = sc.market_makers
        for n in range(counts["market_makers"]):
            symbol = symbols[n % len(symbols)]
            inventory = rng.randint(*cfg["inventory_t"])
            agent = MarketMaker(f"M{n:03d}", f"INST{n:03d}", cfg["activity_per_day"], symbol,
                                inventory, cfg["inventory_limit_t"], tuple(cfg["quote_t"]),
                                rng.randint(*cfg["half_spread_ticks"]), cfg["skew_ticks"],
                                cfg["value_weight"], rng.uniform(*cfg["valuation"]))
            add(agent, cfg["cash_cny"] * 100, self._opening(agent, {symbol: inventory}, projects))
        cfg = sc.noise_traders
        for n in range(counts["noise_traders"]):
            agent = NoiseTrader(f"N{n:04d}", f"NOIS{n:04d}", cfg["activity_per_day"], symbols,
                                tuple(cfg["order_t"]), cfg["take_probability"],
                                cfg["offset_ticks"], cfg["max_live_orders"], cfg["run_alpha"],
                                {k: rng.uniform(*cfg["valuation"]) for k in symbols},
                                cfg["conviction"])
            add(agent, rng.randint(*cfg["cash_cny"]) * 100,
                self._opening(agent, {k: rng.randint(*cfg["inventory_t"]) for k in symbols},
                              projects))
        return agents, accounts

    def _projects(self, owners) -> dict[str, list]:
        """Give every project owner its projects (the scenario's [[project]] rows of its
        type, round robin, else one generated project) and queue the opening transfer in of
        every lot, with its listing; returns contract -> [(Project, vintage), ...]."""
        sc, rng, cfg = self.scenario, self.build_rng, self.scenario.lots
        of_type: dict[str, list] = {}
        for owner in owners:
            of_type.setdefault(owner.instrument, []).append(owner)
        for n, row in enumerate(sc.projects):
            members = of_type.get(row["instrument"])
            if members:
                members[n % len(members)].projects.append(self._project(
                    row["instrument"], row["id"], row["vintages"], row.get("issuance_t")))
        low, high = cfg["vintages"]
        for n, owner in enumerate(owners):
            if not owner.projects:
                kind = self.specs_at_start[owner.instrument].credit_type
                count = min(high - low + 1, rng.randint(*cfg["vintages_per_project"]))
                first = rng.randint(low, high - count + 1)
                owner.projects.append(self._project(
                    owner.instrument, f"CCER-{SECTOR.get(kind, '99')}-2024-{n + 1:04d}",
                    range(first, first + count)))
        out: dict[str, list] = {}
        for owner in owners:
            lots = [(p, v) for p in owner.projects for v in p.vintages]
            weights = [rng.random() + 0.5 for _ in lots]
            left = owner.normal_t
            for i, ((project, vintage), w) in enumerate(zip(lots, weights)):
                qty = left if i == len(lots) - 1 else int(owner.normal_t * w / sum(weights))
                left -= qty
                if project.issuance_t is not None:      # as the scenario says
                    qty = project.issuance_t
                self.opening_lots.append((owner, project, vintage, qty, True))
                out.setdefault(owner.instrument, []).append((project, vintage))
        return out

    def _project(self, contract: str, project_id: str, vintages, issuance_t=None) -> Project:
        self.project_count += 1
        number = self.project_count
        code = contract[5:] if contract.startswith("CCER-") else contract[:3].upper()
        kind = self.specs_at_start[contract].credit_type
        project = Project(kind, contract, project_id, vintages,
                          [f"{code}-{number:04d}-{v}" for v in vintages], issuance_t)
        for v, symbol in zip(project.vintages, project.listings):
            self.lot_types[lot_key(project_id, v)] = kind
            self.listing_vintage[symbol] = v
        return project

    def _opening(self, agent, inventory: dict[str, int], projects: dict) -> dict[str, int]:
        """Opening credits per type: pooled (as before lots), or with lots queued as a
        transfer in of one lot of that type, chosen at random; returns the pooled ones."""
        if not self.lots:
            return inventory
        pooled = {}
        for symbol, qty in inventory.items():
            choices = projects.get(symbol)
            if not choices:              # no project of that type: a pooled holding
                pooled[symbol] = qty
            elif qty > 0:
                project, vintage = choices[self.build_rng.randrange(len(choices))]
                self.opening_lots.append((agent, project, vintage, qty, False))
        return pooled

    def add_agent(self, agent, cash_fen: int, credits: dict[str, int]) -> None:
        """One more participant (before `run()`), with its account and opening balance."""
        self.agents.append(agent)
        self.by_account[agent.account] = agent
        self.accounts.add(Account(agent.account, ParticipantType(agent.participant_type), None,
                                  cash_fen, credits=dict(credits)))
        self.opening[agent.account] = (cash_fen, dict(credits))
        self.settlement.open(agent.account, cash_fen, dict(credits))

    # ------------------------------------------------------------------ what agents see
    def spec(self, instrument):
        return self.specs[instrument]

    def top(self, instrument):
        return self.venue.top(instrument)

    def fair(self, instrument) -> int:
        bid, ask = self.venue.top(instrument)
        if bid is not None and ask is not None:
            return (bid + ask) // 2
        return self.last_price[instrument]

    def clamp(self, instrument, ticks: int) -> int:
        spec = self.specs[instrument]
        return spec.min_ticks if ticks < spec.min_ticks else (
            spec.max_ticks if ticks > spec.max_ticks else ticks)

    def sellable(self, agent, instrument) -> int:
        return self.venue.credits_sellable(agent.account, instrument)

    def tradable(self, instrument) -> bool:
        """Whether the instrument trades today (Art.17: a new listing from its first day)."""
        spec = self.specs.get(instrument)
        return spec is not None and spec.tradable_from <= self.day

    def vintage_factor(self, instrument) -> float:
        """What a listing's vintage is worth relative to its type (1.0 for a contract):
        `lots.vintage_premium` per year above the oldest vintage."""
        vintage = self.listing_vintage.get(instrument)
        if vintage is None:
            return 1.0
        return max(0.5, 1 + self.vintage_premium * (vintage - self.oldest_vintage))

    def listings_by_recency(self, contract: str) -> list[str]:
        """The tradable listings of a credit type, most recent vintage first."""
        return [s for s in self.listings[contract] if self.tradable(s)]

    def elapsed_share(self, last_day: int) -> float:
        """Share of the trading time up to the end of `last_day` already gone (0..1+)."""
        return (self.day * MINUTES_PER_DAY + self.minute) / ((last_day + 1) * MINUTES_PER_DAY)

    def wake(self, agent, minutes: int) -> None:
        """Activate `agent` again `minutes` from now (same day only): child orders of a run."""
        minute = self.minute + minutes
        if minute < MINUTES_PER_DAY:
            self.wakeups.setdefault(minute, []).append(agent)

    # ------------------------------------------------------------------ what agents do
    def order(self, agent, instrument: str, side: str, ticks: int, qty: int, tif, ts: int,
              order_type: str = "limit"):
        """A limit order (or a take order priced at `ticks`, the best level) sized to what
        the account can pay for or deliver."""
        spec = self.specs[instrument]
        ticks = self.clamp(instrument, ticks)
        if side == "buy":
            afford = (self.venue.cash_available(agent.account) * PPM
                      // (ticks * spec.tick_fen * (PPM + self.fee_ppm)))
            qty = min(qty, afford)
        else:
            qty = min(qty, self.venue.credits_sellable(agent.account, instrument))
        qty = min(qty, spec.max_qty if self.rules.max_qty is None else self.rules.max_qty)
        if qty <= 0:
            return
        agent.n_orders = n = getattr(agent, "n_orders", 0) + 1
        bid, ask = self.venue.top(instrument)
        self.commands += 1
        order_id = f"{agent.agent_id}.{self.day}.{n}"
        events = self.venue.send(NewOrder(order_id, agent.account,
                                          instrument, side, order_type, tif,
                                          None if order_type == "take" else ticks * spec.tick_units,
                                          qty, ts))
        filled = self.dispatch(events, agent, order_id)
        if filled and bid is not None and ask is not None:
            after_bid, after_ask = self.venue.top(instrument)
            if after_bid is not None and after_ask is not None:
                self.impacts[instrument].append((1 if side == "buy" else -1, filled, bid + ask,
                                                 after_bid + after_ask))

    def take(self, agent, instrument: str, side: str, ticks: int, qty: int, ts: int) -> None:
        """Take liquidity up to limit `ticks`: an IOC limit order where the rules allow IOC
        (it may walk a few levels), else a take order (摘牌) of the best level, sent only if
        that level is within the limit."""
        if TimeInForce.IOC in self.rules.tifs:
            return self.order(agent, instrument, side, ticks, qty, "ioc", ts)
        bid, ask = self.venue.top(instrument)
        best = ask if side == "buy" else bid
        if best is None or (best > ticks if side == "buy" else best < ticks):
            return
        self.order(agent, instrument, side, best, qty, None, ts, order_type="take")

    def may_trade(self, agent, instrument: str, side: str) -> bool:
        """Whether the rules let `agent` trade `side` of `instrument` now, from what it knows:
        the Art.29 holding period (its last trade of the other side, counted in trading
        days) and no order of the other side working."""
        days = self.rules.holding_days
        if not days:
            return True
        other = "sell" if side == "buy" else "buy"
        last = agent.last_trade_day.get((instrument, other))
        if last is not None and self.day - last < days:
            return False
        return not agent.working(instrument, other)

    def cancel(self, agent, order_id: str, ts: int) -> None:
        self.commands += 1
        self.dispatch(self.venue.send(CancelOrder(order_id, ts)), agent)

    # ------------------------------------------------------------------ events
    def dispatch(self, events, submitter=None, order_id=None) -> int:
        """Route events to the agents and every trade to the settlement; returns the
        quantity order `order_id` traded."""
        by_account, filled = self.by_account, 0
        for e in events:
            kind = type(e)
            if kind is TradeExecuted:
                self.settlement.trade(e, self.specs[e.instrument])
                instrument, qty = e.instrument, e.qty
                buyer, seller = by_account[e.buy_account], by_account[e.sell_account]
                buyer.bought[instrument] = buyer.bought.get(instrument, 0) + qty
                seller.sold[instrument] = seller.sold.get(instrument, 0) + qty
                kind = self.type_of[instrument]
                buyer.bought_type[kind] = buyer.bought_type.get(kind, 0) + qty
                self.trade_lots[e.trade_id] = e.lots
                buyer.fees += e.buy_fee
                seller.fees += e.sell_fee
                buyer.trades += 1
                seller.trades += 1
                buyer.last_trade_day[(instrument, "buy")] = self.day
                seller.last_trade_day[(instrument, "sell")] = self.day
                for agent, order_id, open_qty in ((buyer, e.buy_order_id, e.buy_open_qty),
                                                  (seller, e.sell_order_id, e.sell_open_qty)):
                    live = agent.live.get(order_id)
                    if live is not None:      # a FIX venue may pair halves late
                        if open_qty:
                            live.open_qty = open_qty
                        else:
                            del agent.live[order_id]
                self.last_price[instrument] = e.price
                if order_id is not None and (e.buy_order_id == order_id
                                             or e.sell_order_id == order_id):
                    filled += qty
                self.trades.append((e.trade_id, self.day, e.ts, instrument, e.price, qty,
                                    e.buy_account, e.sell_account, e.aggressor.value,
                                    e.buy_fee, e.sell_fee))
            elif kind is OrderAccepted:
                by_account[e.account].live[e.order_id] = Live(e.instrument, e.side.value,
                                                              e.price, e.qty)
            elif kind is OrderCancelled:
                by_account[e.account].live.pop(e.order_id, None)
                if e.reason is EOD:
                    self.days[-1].expired += 1
            elif kind is OrderRejected:
                if submitter is not None:
                    submitter.rejects += 1
                reason = e.reason.value
                self.rejects[reason] = self.rejects.get(reason, 0) + 1
            elif kind is DayClosed:
                self.days[-1].closes[e.instrument] = e
                if not e.volume:
                    self.last_price[e.instrument] = e.close_ticks
            elif kind is InstrumentDefined:
                self._listed(e.spec)
            elif kind is Deposited:
                self.settlement.deposit(e)
                self.deposits.append(e)
            elif kind is Retired:
                self.settlement.retire(e)
                self.retirements.append(e)
        return filled

    def _listed(self, spec) -> None:
        """A listing declared on a lot's first transfer in: agents may now find it."""
        symbol = spec.symbol
        self.listed_specs.setdefault(symbol, spec)
        self.last_price[symbol] = spec.ref_ticks
        contract = self.contracts.get(spec.credit_type, symbol)
        self.type_of[symbol] = contract
        self.listing_vintage.setdefault(symbol, spec.vintage)
        self.lot_types.setdefault(spec.holding, spec.credit_type)
        listings = self.listings.setdefault(contract, [])
        listings.append(symbol)
        listings.sort(key=lambda s: (-self.listing_vintage[s], s))

    # ------------------------------------------------------------------ the days
    def _issue(self, day: int) -> None:
        sc, rng = self.scenario, self.rng
        owners = [a for a in self.agents if isinstance(a, ProjectOwner)]
        lo, hi = sc.project_owners["issuance_per_day_t"]
        batches = []
        if day > 0 and hi > 0:
            batches += [(owner, rng.randint(lo, hi), "routine") for owner in owners]
        for shock in sc.issuance:
            if shock["day"] - 1 == day:
                of_type = [o for o in owners if o.instrument == shock["instrument"]]
                share, rest = divmod(shock["qty"], len(of_type))
                batches += [(o, share + (1 if i < rest else 0), "batch")
                            for i, o in enumerate(of_type)]
        impact = sc.fundamental["issuance_impact_per_mt"]
        for shock in sc.issuance:     # supply: a batch lowers the value of its type
            if shock["day"] - 1 == day and impact:
                self.log_value[shock["instrument"]] -= impact * shock["qty"] / 1_000_000
                self.value[shock["instrument"]] = math.exp(self.log_value[shock["instrument"]])
        ts = self.calendar.open_ns(day) - NS_PER_MIN      # before the open
        moves = []       # lots moved in, in one request to the venue
        if day == 0 and self.lots:
            moves += [(*x, "opening") for x in self.opening_lots]
        for owner, qty, kind in batches:
            if qty <= 0:
                continue
            if self.lots and owner.projects:    # into its newest vintage
                project = max(owner.projects, key=lambda p: (p.vintages[-1], p.project))
                moves.append((owner, project, project.vintages[-1], qty, False, kind))
                continue
            self.dispatch([self.venue.issue(owner.account, owner.instrument, qty, ts)])
            owner.issued += qty
            self.issuance.append((day, owner.instrument, owner.account, qty, kind))
        if moves:
            self._deposit_lots(moves, ts)

    def _deposit_lots(self, moves: list, ts: int) -> None:
        """Move lots in from the registry; an owner's first transfer in of a lot declares its
        listing at its value of that vintage (the listing's first benchmark, Art.17)."""
        requests = []
        for agent, project, vintage, qty, declare, kind in moves:
            symbol = price = None
            if declare:
                symbol = project.listings[project.vintages.index(vintage)]
                spec = self.specs_at_start[project.contract]
                factor = max(0.5, 1 + self.vintage_premium * (vintage - self.oldest_vintage))
                price = int(agent.value * factor) * spec.tick_units
            requests.append((agent.account, project.credit_type, project.project, vintage, qty,
                             symbol, price))
            if isinstance(agent, ProjectOwner):
                agent.issued += qty
            self.issuance.append((self.day, project.contract, agent.account, qty, kind))
        self.commands += len(requests)
        self.dispatch(self.venue.deposit_lots(requests, ts))

    def _retire_delivered(self, emitters, ts: int) -> None:
        """After the close (what was bought is delivered and free): every emitter retires
        the credits it holds of the types it needs, lot by lot, up to its need."""
        purpose = self.scenario.lots["purpose"]
        for emitter in emitters:
            retired = emitter.retired_type
            for key, qty in self._free_holdings(emitter.account):
                kind = self.type_of_key(key)
                left = emitter.needs.get(kind, 0) - retired.get(kind, 0)
                qty = min(qty, left)
                if qty <= 0:
                    continue
                self.retire_count += 1
                self.commands += 1
                event = self.venue.retire(f"RET-{self.retire_count}", emitter.account, key, qty,
                                          purpose, ts)
                if type(event) is not Retired:
                    raise AssertionError(f"the exchange refused a retirement: {event}")
                self.dispatch([event])
                retired[kind] = retired.get(kind, 0) + qty

    def _free_holdings(self, account: str) -> list[tuple[str, int]]:
        """(holding key, tonnes it may retire) of an account, in key order (credits bought
        on an earlier day are retirable even while Art.29 holds them back from selling)."""
        held = self.venue.accounts.by_id[account]
        return [(key, held.credits_retirable(key)) for key in sorted(held.credits)
                if held.credits_retirable(key) > 0]

    def type_of_key(self, key: str) -> str | None:
        """A holding key's credit type, as its contract symbol (a pooled key is its own)."""
        kind = self.lot_types.get(key)
        return key if kind is None else self.contracts.get(kind)

    def _move_values(self) -> None:
        """One minute of the fundamental values: x = ln(value) reverts to ln(1 + drift *
        elapsed days) at `mean_reversion_per_day`, diffuses at `daily_volatility` and now
        and then jumps on news (`news_per_day`, size `news_size`, either sign)."""
        f, rng = self.scenario.fundamental, self.rng
        for s in self.symbols:
            x = self.log_value[s]
            target = self.drift * (self.day * MINUTES_PER_DAY + self.minute)
            x += self.reversion * (target - x)
            if self.value_step:
                x += rng.gauss(0.0, self.value_step)
            if self.news_chance and rng.random() < self.news_chance:
                x += f["news_size"] * (1 if rng.random() < 0.5 else -1)
            self.log_value[s] = x
            self.value[s] = math.exp(x)

    def fundamental(self, instrument: str) -> int:
        """The fundamental value of a credit type now, in ticks."""
        return int(self.anchor[instrument] * self.value[instrument])

    def _activations(self, groups, minute: int) -> list:
        rng, weight = self.rng, _u_shape(minute)
        chosen = []
        for members, per_minute in groups:
            expected = per_minute * weight
            count = int(expected)
            if rng.random() < expected - count:
                count += 1
            n = len(members)
            chosen += [members[rng.randrange(n)] for _ in range(count)]
        rng.shuffle(chosen)
        return chosen

    def run(self) -> SimResult:
        started = time.perf_counter()
        if self.venue is None:          # e.g. the FIX venue: needs the whole population first
            self.venue = self.venue_factory(self)
            self.specs = self.venue.specs
        try:
            return self._run(started)
        finally:
            if hasattr(self.venue, "close"):
                self.venue.close()

    def _run(self, started: float) -> SimResult:
        sc, cal, venue = self.scenario, self.calendar, self.venue
        start_specs = dict(self.specs)
        groups = []
        kinds = list(dict.fromkeys(type(a) for a in self.agents))   # in order of appearance
        for kind in kinds:
            members = [a for a in self.agents if type(a) is kind]
            groups.append((members, len(members) * members[0].rate / MINUTES_PER_DAY))
        emitters = [a for a in self.agents if isinstance(a, Emitter)]
        symbols, samples = self.symbols, self.samples
        for day in range(sc.days):
            self.day = day
            self.days.append(DayRecord(day, cal.dates[day].isoformat()))
            self.wakeups.clear()
            self._issue(day)
            for minute in range(MINUTES_PER_DAY):
                self.minute = minute
                self._move_values()
                start = cal.minute_ns(day, minute)
                chosen = self._activations(groups, minute)
                woken = self.wakeups.pop(minute, None)
                if woken:
                    chosen += woken
                    self.rng.shuffle(chosen)
                n = len(chosen)
                for k, agent in enumerate(chosen):
                    agent.act(self, start + k * NS_PER_MIN // n)
                for s in symbols:
                    bid, ask = venue.top(s)
                    bid_depth, ask_depth = venue.depth(s, 5)
                    samples[s].append((day, minute, bid, ask, bid_depth, ask_depth))
                if self.progress is not None:
                    self.progress(day * MINUTES_PER_DAY + minute + 1)
            books = getattr(venue, "books", None)
            self.days[-1].resting_at_close = sum(len(b.orders) for b in books.values()) \
                if books is not None else 0
            self.commands += 1
            self.dispatch(venue.end_of_day(cal.close_ns(day)))
            if hasattr(self.settlement, "close_day"):
                self.settlement.close_day(cal.close_ns(day))
            if self.lots:
                self._retire_delivered(emitters, cal.close_ns(day))
            record = self.days[-1]
            record.emitter_bought = {s: sum(e.bought_type.get(s, 0) for e in emitters)
                                     for s in symbols}   # contract and listings of the type
            accounts = getattr(venue, "accounts", None)
            if accounts is not None:
                record.reconciliation = self.settlement.reconcile(accounts, day)
                exchange_check = getattr(venue, "exchange_problems", None)
                if exchange_check is not None:       # the accounts above are a shadow of them
                    record.reconciliation.problems += exchange_check()
                    record.reconciliation.checked.append("exchange accounts")
                    record.reconciliation.against = venue.accounts_label
        if hasattr(self.settlement, "close"):
            self.settlement.close()
        self.trades.sort()          # by trade id (a FIX venue may complete pairs out of order)
        accounts = getattr(venue, "accounts", self.accounts)
        closing = {a.account: (a.cash, {k: v for k, v in a.credits.items() if v})
                   for a in accounts.by_id.values()}
        return SimResult(sc, cal, self.agents, self.trades, samples, self.impacts, self.days,
                         self.opening, self.issuance, {**start_specs, **self.listed_specs},
                         dict(self.specs), closing,
                         self.commands, dict(sorted(self.rejects.items())),
                         time.perf_counter() - started, venue.mode, self.lots,
                         dict(sorted(self.trade_lots.items())), self.deposits,
                         self.retirements, dict(self.lot_types), dict(self.contracts),
                         self.settlement_note)


def simulate(scenario: Scenario, progress=None, settlement=None, ledger_path=None) -> SimResult:
    return Session(scenario, settlement=settlement, progress=progress,
                   ledger_path=ledger_path).run()
