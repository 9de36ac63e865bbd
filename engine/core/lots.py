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
trading days". THE SAME PRODUCT is the credits of one holding key: one lot (Art.10: credits
are distinguished by registered project and year of generation), or one pooled holding (a
standard contract's default lot, a pooled instrument's credits). A contract is not a
product of its own: it is a way to trade the lots it allows. So:
  - credits: tonnes of a holding key bought on trading day D (through any instrument: its
    listing, a contract delivering it, a pooled book) are held back until day
    D + holding_days: no sell may take them, whichever instrument it is entered in. A
    listing sell that needs them is refused `holding_period`; a contract sell allocates
    only tonnes free of the period (skipping the held-back tonnes of an eligible lot, the
    lot's older tonnes stay eligible) and is refused `holding_period` if those are short
    while the held-back tonnes would have covered it (`insufficient_credits` if even they
    would not). Kept per account and holding key: today's purchases (`bought_today`) and,
    per earlier day of the period, the tonnes bought that day (`Account.held_back`, moved
    and pruned at each close). Retiring is not selling: it takes tonnes free of the period
    first, then held-back tonnes, earliest bought first;
  - instruments, as well (the rule as it was first built, kept because a buy cannot name
    the lots it will receive, so the sell-then-buy direction cannot be checked on the
    credits): after a buy (sell) of instrument X on day D the account may not sell (buy) X
    before day D + holding_days, nor enter an order opposite to one of its own resting in
    X (risk.py, Accounts.check_holding).
Not covered: a lot sold through one instrument and bought back through another (its listing
then a contract, or the reverse) within the period.
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
