"""Rule profiles: which trading rules the exchange applies. One home for every rule that
differs between the market the engine was first built for and the CCER rulebook.

Two profiles:

`continuous` (the replay contract and the benchmarks): limit and market orders; day, IOC and
FOK; amends; self-trade prevention cancels the resting order and matching goes on; a
single order is capped at the instrument's `max_qty`; credits bought today may not be sold
before the close (the same-day resale ban). Its state hash is the hash the engine had before
profiles existed, so existing flows and hashes stay exactly as they are.

`cbeex-2023` (《温室气体自愿减排交易和结算规则（试行）》, 2023-11-16; summary with article
numbers in the research notes):
  - day orders only: a limit order posts a listing (挂牌, Art.13) that lapses at the close;
    a limit order that crosses the other side first trades with the listings it crosses,
    best price first, at their prices (so the book never stands crossed), and posts the rest;
  - the `take` order (摘牌, Art.13) trades only at the best level of the other side;
  - IOC, FOK, market orders and amends are rejected `not_permitted` (cancel and re-enter);
  - no single-order maximum (the instrument's `max_qty` is not applied) unless a profile
    with `max_qty` set is configured;
  - Art.29 holding rule with `holding_days` = 5: after a buy of instrument X on trading day D
    the account may not sell X before day D+5, and after a sell of X it may not buy X before
    day D+5 (cash from a sale is usable the same day). Trading days are counted by the
    end-of-day closes the engine applies (EndOfDay commands): a trade made after k closes is
    on day k, and the opposite side is allowed again once k+5 closes have been applied. An
    account may also not enter an order while it has an order of the opposite side resting
    in X, because the two could both trade on the same day. And on the credits themselves:
    a lot bought on day D (any tonnes of it) cannot be sold through any instrument (its
    listing, a contract) before day D+5, and a lot sold on day D cannot be bought through
    its listing before day D+5 (lots.py, HOLDING PERIOD: what "the same product" means);
  - a taker never takes its own listing: an order that would trade with an order of its own
    account is rejected `self_trade` and the resting order stays;
  - Art.17: a new project-vintage listing (lots.py) trades from the next trading day
    (`listing_days` = 1), its declared initial price its first benchmark.

The take order is allowed in both profiles (in `continuous` it is a new order type that no
existing flow sends, so nothing that replays today changes): it is an immediate limit order
priced at the best opposite level when it arrives, so it never walks to the next level, and
what it cannot fill there is cancelled (reason `take`). With a target it takes that one
listing only, which must be within the best `take_levels` levels (1: the best level only;
the 2021 allowance-market variant is 5).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from enum import Enum
from typing import Optional

from ccerx.engine.core.types import OrderType, TimeInForce


class SelfTrade(Enum):
    CANCEL_RESTING = "cancel_resting"   # the resting order of the same account is cancelled (stp)
    REJECT_TAKER = "reject_taker"       # the incoming order is rejected; the resting one stays


@dataclass(frozen=True, slots=True)
class RuleProfile:
    name: str
    order_types: frozenset          # OrderType members allowed
    tifs: frozenset                 # TimeInForce members allowed for limit/market orders
    amend: bool                     # amends allowed
    holding_days: int               # Art.29 trading days between opposite trades; 0: none
    self_trade: SelfTrade
    max_qty: Optional[int]          # single-order cap replacing every instrument's max_qty;
                                    # None: each instrument's own max_qty applies
    take_levels: int                # a targeted take may reach this many best levels
    listing_days: int = 0           # Art.17: a new listing trades this many trading days
                                    # after it is listed (0: at once)

    def __post_init__(self) -> None:
        if self.holding_days < 0 or self.take_levels < 1 or self.listing_days < 0:
            raise ValueError("holding_days and listing_days must be >= 0, take_levels >= 1")
        if self.max_qty is not None and (type(self.max_qty) is not int or self.max_qty < 1):
            raise ValueError("max_qty must be a positive integer or None")

    def to_json(self) -> dict:
        """Exact, order-independent form for snapshots and opening.json."""
        out = asdict(self)
        out["order_types"] = sorted(t.value for t in self.order_types)
        out["tifs"] = sorted(t.value for t in self.tifs)
        out["self_trade"] = self.self_trade.value
        if not self.listing_days:
            del out["listing_days"]     # (profiles recorded before listings existed)
        return out

    @classmethod
    def from_json(cls, doc: dict) -> "RuleProfile":
        return cls(doc["name"], frozenset(OrderType(t) for t in doc["order_types"]),
                   frozenset(TimeInForce(t) for t in doc["tifs"]), doc["amend"],
                   doc["holding_days"], SelfTrade(doc["self_trade"]), doc["max_qty"],
                   doc["take_levels"], doc.get("listing_days", 0))

    def with_max_qty(self, max_qty: Optional[int]) -> "RuleProfile":
        """The profile with a configured single-order maximum (None: the instruments')."""
        return replace(self, max_qty=max_qty)


# No single-order maximum: only what an account could ever hold (MAX_DEPOSIT) bounds it.
NO_ORDER_MAXIMUM = 10 ** 15

CONTINUOUS = RuleProfile(
    "continuous", frozenset(OrderType), frozenset(TimeInForce), amend=True, holding_days=0,
    self_trade=SelfTrade.CANCEL_RESTING, max_qty=None, take_levels=1)

CBEEX_2023 = RuleProfile(
    "cbeex-2023", frozenset((OrderType.LIMIT, OrderType.TAKE)),
    frozenset((TimeInForce.DAY,)), amend=False, holding_days=5,
    self_trade=SelfTrade.REJECT_TAKER, max_qty=NO_ORDER_MAXIMUM, take_levels=1, listing_days=1)

PROFILES: dict[str, RuleProfile] = {p.name: p for p in (CONTINUOUS, CBEEX_2023)}


def profile(name: str) -> RuleProfile:
    """The profile called `name`; ValueError naming the known ones otherwise."""
    found = PROFILES.get(name)
    if found is None:
        raise ValueError(f"unknown rule profile {name!r}; known: {', '.join(PROFILES)}")
    return found
