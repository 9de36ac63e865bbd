"""Credits as lots: what is delivered is a credit of one registered project and one year of
generation (vintage), Art.10 of the 2023 trading and settlement rules.

A holding is keyed by a string, its *holding key*:
  - a lot `(project, vintage)` is held under `lot_key(project, vintage)`, "PROJECT@VINTAGE"
    (instrument symbols may not contain "@", so a lot key never names an instrument);
  - credits held under an instrument's own symbol are that instrument's pooled holding. This
    is how every holding looked before lots existed: an old journal, snapshot or accounts file
    recovers to exactly the state it had, and its pooled holding of a standard contract
    (`CCER-AFF`, ...) is that credit type's *default lot*: project and vintage unknown.

Three kinds of instrument (InstrumentSpec.kind):
  - a *listing* of one lot (spec.project set): a sell reserves credits of exactly that lot;
  - a *contract* of one credit type (spec.credit_type set, no project; the standard ones are
    `CCER-AFF`, `CCER-SOL`, `CCER-OWF`, `CCER-MGV`, optionally limited to a vintage range): a
    sell reserves credits of any eligible lot of the type, chosen at entry by ALLOCATION ORDER
    below, and a trade delivers them in that order (the trade, the settlement instruction and
    the ledger posting name them as `lots`);
  - a *pooled* instrument (neither: a flow's own symbols): credits under its symbol only.

ALLOCATION ORDER (the one rule that decides which lots a contract sell delivers): the
default lot first (its vintage is unknown, so it counts as the oldest), then by vintage,
oldest first, then by project id; within what the seller can sell (owned, not reserved for
another order, not bought today, not held back by the holding period below).

HOLDING PERIOD (Art.29, under a rule profile with `holding_days`, rules.py): "a participant
may not buy and then sell, or sell and then buy, the same product (同一交易产品) within 5
trading days" (买入后卖出同一交易产品的时间间隔不得少于5个交易日, and the reverse). THE SAME
PRODUCT is the credits of one holding key: one lot (Art.10: credits are distinguished by
registered project and year of generation), or one pooled holding (a standard contract's
default lot, a pooled instrument's credits). A contract is not a product of its own: it is
a way to trade the lots it allows. The rule is about the product, not about tonnes: what
the account held before a purchase is held back with it. So, on trading day T:
  - buy, then sell: an account that bought any tonnes of holding key K on day D (through
    any instrument: K's listing, a contract delivering K, a pooled book) may not sell K
    through any instrument while T < D + holding_days. A listing sell of K is refused
    `holding_period`; a contract sell skips K entirely in its allocation (all its tonnes)
    and is refused `holding_period` if it is short only because of such lots (their
    unreserved tonnes would have covered it), `insufficient_credits` if even they would
    not;
  - sell, then buy: an account that sold any tonnes of K on day D (through any instrument)
    may not buy K through K's listing while T < D + holding_days (`holding_period`). A
    contract buy cannot know which lots it will receive, so it is governed by the
    per-instrument rule below only: a lot sold through its listing may come back through a
    contract within the period;
  - instruments, as well (the rule as it was first built): after a buy (sell) of
    instrument X on day D the account may not sell (buy) X before day D + holding_days,
    nor enter an order opposite to one of its own resting in X (risk.py,
    Accounts.check_holding).
Kept per account and holding key: the trading day of the last purchase and of the last sale
(`Account.lot_bought`, `Account.lot_sold`), dropped at the close that ends their period. A key
that is the traded instrument's own symbol (a pooled instrument's credits, a standard
contract's default lot) trades through that instrument only, so the instrument's record is
the whole rule for it and no per-key record is kept (so journals from before lots recover to
the state hash they had). The
checks are made when an order is entered (a sell also when amended up): an order already
resting when the account trades K the other way through another instrument is not refused
afterwards (a listing sell of K resting while a contract buy delivers K, a listing buy of K
resting while a contract sell delivers K). Retiring is not selling: an account may retire
credits of a held-back lot (credits_retirable).
"""
from __future__ import annotations

from typing import NamedTuple

CREDIT_TYPES = ("afforestation", "solar_thermal", "offshore_wind", "mangrove")

# The standard contract of each credit type (the design's per-type books) and its type.
STANDARD_CONTRACTS = {"CCER-AFF": "afforestation", "CCER-SOL": "solar_thermal",
                      "CCER-OWF": "offshore_wind", "CCER-MGV": "mangrove"}

MIN_VINTAGE, MAX_VINTAGE = 2005, 2100     # CCER projects count reductions from 2005 on
MAX_PROJECT_LEN = 64
LOT_SEPARATOR = "@"


class Lot(NamedTuple):
    credit_type: str
    project: str
    vintage: int

    @property
    def key(self) -> str:
        return lot_key(self.project, self.vintage)


def lot_key(project: str, vintage: int) -> str:
    return f"{project}{LOT_SEPARATOR}{vintage}"


def lot_problem(credit_type, project, vintage) -> str:
    """Why (credit_type, project, vintage) is not a lot one may name, or "" if it is one.
    Project ids are printable ASCII without spaces or "@" (registry ids such as
    CCER-14-2024-0001)."""
    if credit_type not in CREDIT_TYPES:
        return f"credit_type must be one of {', '.join(CREDIT_TYPES)}"
    if (type(project) is not str or not 0 < len(project) <= MAX_PROJECT_LEN
            or not (project.isascii() and project.isprintable()) or " " in project
            or LOT_SEPARATOR in project):
        return (f"project must be a registry project id of 1-{MAX_PROJECT_LEN} printable ASCII "
                f"characters without spaces or {LOT_SEPARATOR!r}")
    if type(vintage) is not int or not MIN_VINTAGE <= vintage <= MAX_VINTAGE:
        return f"vintage must be a year from {MIN_VINTAGE} to {MAX_VINTAGE}"
    return ""


def lots_json(lots) -> list:
    """((project | None, vintage | None, qty), ...) -> the edges' `lots` list (None: the
    default lot, a pooled holding of unknown project and vintage)."""
    return [{"project": project, "vintage": vintage, "qty": qty} for project, vintage, qty in lots]
