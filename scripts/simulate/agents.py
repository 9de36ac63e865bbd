"""The participants of a simulated CCER market and how each decides.

Each agent owns one account and, when the day loop activates it, looks at the market
through `m` (the running session: top of book, fair price, band, its balances) and sends
orders through it. Agents keep only what they were told by events: their live orders
(`live`: order id -> Live) and what they bought and sold. Prices are integer ticks.

- Emitter (key emission unit): has an offset need per accepted credit type (all needs
  together capped at 5% of its verified emissions) and a deadline. It buys in child
  orders, mostly resting at the bid early on, crossing the spread more often and paying
  up more the closer the deadline and the further it is behind schedule. With lots, a
  share of its purchases (`lots.named_share`) takes a named listing of the type instead,
  the most recent vintage within what it will pay (recent vintages are worth more to it:
  `lots.vintage_premium` a year); the contract delivers whatever the sellers' allocation
  gives. After each close it retires (注销) what was delivered, up to its need (run.py).
- ProjectOwner: holds one credit type and receives issuance batches. It offers slices of
  its inventory at an ask that drops with ln(inventory / normal inventory) and, under
  heavy inventory pressure (a large batch), also hits bids. With lots (the default), it
  owns projects (`projects`: id and vintages) and holds only their lots: it moves each lot
  in from the registry declaring a listing (Art.17) and offers either on one of its own
  listings (`lots.list_share`, once tradable) or on its type's contract, which delivers
  its oldest vintage first (engine/core/lots.py, ALLOCATION ORDER).
- MarketMaker (investment institution): two-sided quotes around the last price, skewed
  against its inventory, never beyond its inventory limit; requotes on each activation.
- NoiseTrader: random type and size for background flow, within its cash and holdings; its
  side leans towards its private view of the type's value (`conviction`) and its passive
  orders rest around a blend of the mid and that view.

Valuations are relative to the session's fundamental value of each type (`m.value`,
`m.fundamental()`: a mean-reverting random walk moved by news and issuance, see run.py), and
every agent has its own view of it, so they disagree; market makers pull the centre of
their quotes towards their view (`value_weight`) and skew it against their inventory.

Agents use only what the exchange's rules allow (`m.rules`, engine/core/rules.py): taking
liquidity is `m.take` (an IOC limit order under `continuous`, a take order of the best level
under `cbeex-2023`), and under a holding period (Art.29) an agent asks `m.may_trade` before
choosing a side: a market maker then quotes one side only (the side its inventory and the
holding period allow), and a noise trader trades the side it may.
"""
from __future__ import annotations

import math

MAX_NEED_SHARE_PPM = 50_000   # offsets are capped at 5% of verified emissions


class Live:
    __slots__ = ("instrument", "side", "price", "open_qty")

    def __init__(self, instrument, side, price, open_qty):
        self.instrument, self.side, self.price, self.open_qty = instrument, side, price, open_qty


class Agent:
    kind = "agent"
    participant_type = "other_organisation"

    def __init__(self, agent_id: str, account: str, rate: float):
        self.agent_id = agent_id
        self.account = account
        self.rate = rate              # activations per trading day
        self.live: dict[str, Live] = {}
        self.bought: dict[str, int] = {}
        self.sold: dict[str, int] = {}
        self.fees = 0                 # fen
        self.trades = 0
        self.rejects = 0
        self.last_trade_day: dict[tuple[str, str], int] = {}   # (instrument, side) -> day
        self.bought_type: dict[str, int] = {}   # tonnes bought per credit type (its contract)

    def act(self, m, ts: int) -> None:
        raise NotImplementedError

    def working(self, instrument: str, side: str) -> int:
        return sum(o.open_qty for o in self.live.values()
                   if o.instrument == instrument and o.side == side)

    def cancel_all(self, m, ts: int, instrument: str | None = None) -> None:
        for order_id in [k for k, o in self.live.items()
                         if instrument is None or o.instrument == instrument]:
            m.cancel(self, order_id, ts)


class Emitter(Agent):
    kind = "emitter"
    participant_type = "key_emission_unit"

    def __init__(self, agent_id, account, rate, verified_t: int, needs: dict[str, int],
                 deadline_day: int, child_t: tuple[int, int], values: dict[str, int],
                 premium: float, burst: tuple[int, int]):
        super().__init__(agent_id, account, rate)
        cap = verified_t * MAX_NEED_SHARE_PPM // 1_000_000
        total = sum(needs.values())
        if total > cap:  # scale every type's need down so the total fits under the cap
            needs = {k: v * cap // total for k, v in needs.items()}
        self.verified_t = verified_t
        self.needs = {k: v for k, v in needs.items() if v > 0}
        self.deadline_day = deadline_day   # 0-based index of the last day it buys on
        self.child_t = child_t
        self.values = values               # private value per credit type, ticks
        self.premium = premium             # extra it will pay over its value at the deadline
        self.burst = burst                 # length range of an aggressive run (child orders)
        self.run_left = 0
        self.run_instrument = None
        self.retired_type: dict[str, int] = {}   # tonnes retired per credit type (contract)

    def remaining(self, instrument: str) -> int:
        """Tonnes of credit type `instrument` (its contract's symbol) still to buy."""
        return self.needs[instrument] - self.bought_type.get(instrument, 0)

    def working_type(self, m, kind: str) -> int:
        """Tonnes of open buys of credit type `kind`: its contract and its listings."""
        return sum(o.open_qty for o in self.live.values()
                   if o.side == "buy" and m.type_of[o.instrument] == kind)

    def act(self, m, ts):
        u = m.elapsed_share(self.deadline_day)
        if u >= 1.0:
            return
        rng = m.rng
        todo = [(self.remaining(k) - self.working_type(m, k), k) for k in self.needs]
        todo = [(r, k) for r, k in todo if r > 0]
        if not todo:
            self.run_left = 0
            return
        if self.run_left and self.run_instrument in self.needs and self.remaining(self.run_instrument) > 0:
            instrument = self.run_instrument
        else:
            self.run_left = 0
            instrument = todo[rng.randrange(len(todo))][1] if rng.random() < 0.3 else max(todo)[1]
        need = self.needs[instrument]
        bought = self.bought_type.get(instrument, 0)
        behind = bought < need * min(1.0, u * 1.1 + 0.05)
        if m.lots and not self.run_left and rng.random() < m.named_share \
                and self._take_listing(m, ts, instrument, u):
            return
        bid, ask = m.top(instrument)
        # what it will pay: its value, plus a premium that grows towards the deadline
        cap = m.clamp(instrument, int(self.values[instrument] * m.value[instrument]
                                      * (1 + self.premium * u * u)))
        qty = min(self.remaining(instrument) - self.working_type(m, instrument),
                  rng.randint(*self.child_t))
        if qty <= 0:
            return
        if self.run_left:
            self.run_left -= 1
            take = ask is not None and ask <= cap
        else:
            take = (ask is not None and ask <= cap
                    and rng.random() < (0.1 + 0.7 * u * u if behind else 0.03))
            if take:
                self.run_left = rng.randint(*self.burst) - 1
                self.run_instrument = instrument
        if take:
            price = min(cap, ask + (rng.randint(0, 3) if u > 0.6 else 0))
            m.take(self, instrument, "buy", price, qty, ts)
            if self.run_left:
                m.wake(self, rng.randint(1, 4))   # next child order of the run, minutes later
            return
        self.run_left = 0
        # passive: one resting bid per type, improved to the top of the book up to the cap
        for order_id, o in list(self.live.items()):
            if o.instrument == instrument:
                if bid is not None and o.price >= bid - 2:
                    return          # near the best bid: keep its time priority
                m.cancel(self, order_id, ts)
        if bid is None:
            price = m.fair(instrument) - rng.randint(1, 4)
        else:   # join the best bid; improve it (inside the spread) only now and then
            price = bid + (1 if rng.random() < 0.2 + 0.5 * u else 0) - rng.randint(0, 2)
        if ask is not None and price >= ask:
            price = ask - 1
        m.order(self, instrument, "buy", min(price, cap), qty, "day", ts)

    def _take_listing(self, m, ts, kind: str, u: float) -> bool:
        """Take the best offer of the most recent vintage listed for credit type `kind` that
        is within what it will pay for that vintage; False if none is."""
        qty = min(self.remaining(kind) - self.working_type(m, kind), m.rng.randint(*self.child_t))
        if qty <= 0:
            return False
        for symbol in m.listings_by_recency(kind):
            ask = m.top(symbol)[1]
            if ask is None:
                continue
            cap = m.clamp(symbol, int(self.values[kind] * m.value[kind] * m.vintage_factor(symbol)
                                      * (1 + self.premium * u * u)))
            if ask <= cap:
                m.take(self, symbol, "buy", ask, qty, ts)
                return True
        return False


class Project:
    """A registered project of one credit type: its id, its vintages and the listing symbol
    its owner declares for each lot (vintage) on the first transfer in."""
    __slots__ = ("credit_type", "contract", "project", "vintages", "listings", "issuance_t")

    def __init__(self, credit_type: str, contract: str, project: str, vintages, listings,
                 issuance_t: int | None = None):
        self.credit_type, self.contract, self.project = credit_type, contract, project
        self.vintages, self.listings = tuple(vintages), tuple(listings)
        self.issuance_t = issuance_t      # t moved in per vintage (None: the owner's split)


class ProjectOwner(Agent):
    kind = "project_owner"
    participant_type = "project_owner"

    def __init__(self, agent_id, account, rate, instrument: str, normal_t: int,
                 slice_share: tuple[float, float], discount: float, dump_pressure: float,
                 value: int, burst: tuple[int, int]):
        super().__init__(agent_id, account, rate)
        self.instrument = instrument
        self.normal_t = max(1, normal_t)
        self.slice_share = slice_share
        self.discount = discount
        self.dump_pressure = dump_pressure
        self.value = value            # private value of its credits, ticks
        self.burst = burst
        self.run_left = 0
        self.issued = 0
        self.projects: list[Project] = []     # with lots: the projects it owns

    def act(self, m, ts):
        rng, instrument = m.rng, self.instrument
        if self.projects and m.lots and not self.run_left:
            listings = [s for p in self.projects for s in p.listings if m.tradable(s)]
            if listings and rng.random() < m.list_share:
                instrument = listings[rng.randrange(len(listings))]
        working = sum(o.open_qty for o in self.live.values() if o.side == "sell")
        free = m.sellable(self, self.instrument)       # every lot of its type
        inventory = free + working
        if inventory <= 0:
            return
        free = m.sellable(self, instrument)
        pressure = inventory / self.normal_t
        bid, ask = m.top(instrument)
        fair = m.fair(instrument)
        # reservation price: its value, lower the more inventory weighs on it
        reserve = int(self.value * m.value[self.instrument] * m.vintage_factor(instrument)
                      * (1 - self.discount * math.log(max(pressure, 0.25))))
        rich = max(0.0, fair / reserve - 1)          # how far the market is above it
        share = min(0.25, rng.uniform(*self.slice_share) * (1 + 12 * rich))
        qty = min(free, max(1, int(inventory * share)))
        dumping = pressure > self.dump_pressure or rich > 0.04
        if self.run_left or (dumping and bid is not None and qty > 0 and bid >= reserve
                             and rng.random() < min(0.6, 0.1 * pressure + 3 * rich)):
            if bid is not None and qty > 0 and bid >= reserve:
                self.run_left = (self.run_left - 1) if self.run_left else rng.randint(*self.burst) - 1
                m.take(self, instrument, "sell", bid, qty, ts)
                if self.run_left:
                    m.wake(self, rng.randint(1, 4))
                return
            self.run_left = 0
        target = max(reserve, fair + rng.randint(-1, 3))
        for order_id, o in list(self.live.items()):
            if o.instrument != instrument:
                continue
            if abs(o.price - target) <= 2 and (ask is None or o.price <= ask + 2):
                return      # resting offer still about right
            m.cancel(self, order_id, ts)
        free = m.sellable(self, instrument)
        qty = min(free, qty if qty > 0 else free)
        if qty <= 0:
            return
        if bid is not None and target <= bid:
            target = bid + 1
        m.order(self, instrument, "sell", target, qty, "day", ts)


class MarketMaker(Agent):
    kind = "market_maker"
    participant_type = "investment_institution"

    def __init__(self, agent_id, account, rate, instrument: str, opening_t: int, limit_t: int,
                 quote_t: tuple[int, int], half_spread: int, skew_ticks: int,
                 value_weight: float = 0.0, valuation: float = 1.0):
        super().__init__(agent_id, account, rate)
        self.value_weight = value_weight   # pull of its quotes' centre towards its valuation
        self.valuation = valuation         # its view of the fundamental value (multiple)
        self.instrument = instrument
        self.opening_t = opening_t
        self.limit_t = limit_t
        self.quote_t = quote_t
        self.half_spread = half_spread
        self.skew_ticks = skew_ticks

    def position(self) -> int:
        """Net tonnes bought since the open of the run (inventory away from the opening)."""
        return self.bought.get(self.instrument, 0) - self.sold.get(self.instrument, 0)

    def act(self, m, ts):
        rng, instrument = m.rng, self.instrument
        self.cancel_all(m, ts)
        position = self.position()
        fair = m.last_price[instrument]
        if self.value_weight:
            view = m.fundamental(instrument) * self.valuation
            fair = int(round(fair + self.value_weight * (view - fair)))
        skew = -int(round(self.skew_ticks * position / self.limit_t))
        bid_px = fair - self.half_spread + skew
        ask_px = fair + self.half_spread + skew
        bid, ask = m.top(instrument)
        if ask is not None and bid_px >= ask:
            bid_px = ask - 1
        if bid is not None and ask_px <= bid:
            ask_px = bid + 1
        qty = rng.randint(*self.quote_t)
        may_buy, may_sell = m.may_trade(self, instrument, "buy"), m.may_trade(self, instrument, "sell")
        if may_buy and may_sell and m.rules.holding_days:
            # one side only (an order of each would break the holding rule): lean against
            # the inventory
            may_buy, may_sell = (position < 0, position >= 0) if position else (
                (True, False) if rng.random() < 0.5 else (False, True))
        if may_buy and position + qty <= self.limit_t:
            m.order(self, instrument, "buy", m.clamp(instrument, bid_px), qty, "day", ts)
        sell_qty = min(qty, m.sellable(self, instrument), self.limit_t + position)
        if may_sell and sell_qty > 0:
            m.order(self, instrument, "sell", m.clamp(instrument, ask_px), sell_qty, "day", ts)


class NoiseTrader(Agent):
    kind = "noise_trader"
    participant_type = "other_organisation"

    def __init__(self, agent_id, account, rate, instruments: list[str], order_t: tuple[int, int],
                 take_probability: float, offset_ticks: int, max_live: int, run_alpha: float,
                 valuation: dict[str, float] | None = None, conviction: float = 0.0):
        super().__init__(agent_id, account, rate)
        # its private view of each type's value (a multiple of the fundamental) and how
        # strongly the gap between that view and the mid tilts its side: 0 = a coin flip
        self.valuation = valuation or {}
        self.conviction = conviction
        self.instruments = instruments
        self.order_t = order_t
        self.take_probability = take_probability
        self.offset_ticks = offset_ticks
        self.max_live = max_live
        self.run_alpha = run_alpha   # tail exponent of the run length of a split market order
        self.run = None              # (instrument, side, child orders left)

    def act(self, m, ts):
        rng = m.rng
        if self.run is not None:
            instrument, side, left = self.run
            self.run = (instrument, side, left - 1) if left > 1 else None
            self._take(m, ts, instrument, side, self._size(rng))
            return
        if len(self.live) >= self.max_live:
            m.cancel(self, next(iter(self.live)), ts)   # oldest first
        instrument = self.instruments[rng.randrange(len(self.instruments))]
        p_buy = 0.5
        if self.conviction:
            view = m.fundamental(instrument) * self.valuation.get(instrument, 1.0)
            mid = m.fair(instrument)
            p_buy = min(0.9, max(0.1, 0.5 + self.conviction * (view - mid) / mid))
        side = "buy" if rng.random() < p_buy else "sell"
        qty = self._size(rng)
        if side == "sell" and m.sellable(self, instrument) <= 0:
            side = "buy"
        if not m.may_trade(self, instrument, side):
            side = "sell" if side == "buy" else "buy"
            if not m.may_trade(self, instrument, side) or (
                    side == "sell" and m.sellable(self, instrument) <= 0):
                return
        if rng.random() < self.take_probability:
            # a market order split into a run of child orders; run lengths are power-law
            # distributed (P(L >= l) ~ l^-alpha), the usual source of order-sign memory
            length = min(60, int(rng.random() ** (-1 / self.run_alpha)))
            if length > 1:
                self.run = (instrument, side, length - 1)
            self._take(m, ts, instrument, side, qty)
            return
        bid, ask = m.top(instrument)
        fair = m.fair(instrument)
        if self.conviction:     # passive orders rest around a blend of the mid and its view
            view = m.fundamental(instrument) * self.valuation.get(instrument, 1.0)
            fair = int(round((fair + view) / 2))
        offset = rng.randint(-1, self.offset_ticks)
        price = fair - offset if side == "buy" else fair + offset
        m.order(self, instrument, side, price, qty, "day", ts)

    def _size(self, rng) -> int:
        """Log-uniform order size: many small orders, a few large ones."""
        lo, hi = self.order_t
        return int(math.exp(rng.uniform(math.log(lo), math.log(hi + 1))))

    def _take(self, m, ts, instrument, side, qty):
        bid, ask = m.top(instrument)
        touch = ask if side == "buy" else bid
        if touch is not None and m.may_trade(self, instrument, side):
            through = m.rng.randint(0, 4)      # marketable limit: may walk a few levels
            m.take(self, instrument, side, touch + through if side == "buy" else touch - through,
                   qty, ts)
        if self.run is not None:
            m.wake(self, 1)
