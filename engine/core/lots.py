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
another order, not bought today).
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
