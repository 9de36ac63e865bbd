"""Scenarios: what a simulated market looks like, as data (TOML) over built-in defaults.

A scenario file only needs the keys it changes; everything else comes from DEFAULTS, so
`ccerx simulate` with no file runs the default market. Money is integer CNY or decimal
text; behavioural parameters (rates, shares) may be TOML floats because they are not money.

    name = "issuance shock"
    days = 5
    [agents]
    noise_traders = 300
    [[issuance]]            # a registry batch credited to the project owners of one type
    day = 3                 # 1-based trading day, credited before the open
    instrument = "CCER-SOL"
    qty = 400000            # tonnes, split evenly over that type's project owners
"""
from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from ccerx.engine.core.lots import MAX_VINTAGE, MIN_VINTAGE, STANDARD_CONTRACTS, lot_problem
from ccerx.engine.core.risk import DEFAULT_FEE_PPM, PPM
from ccerx.engine.core.types import DEFAULT_INSTRUMENTS, InstrumentSpec, parse_decimal_units

DEFAULTS: dict = {
    "name": "default",
    "days": 5,
    "seed": 1,
    "start_date": "2026-03-02",       # a Monday; weekends are skipped
    "fee_rate": "0.006",              # per side
    "instruments": [],                 # [[instrument]] overrides of the four CCER types
    "agents": {"emitters": 400, "project_owners": 40, "market_makers": 40, "noise_traders": 520},
    "emitters": {
        "verified_emissions_t": [60_000, 600_000],  # uniform range, tonnes CO2e per year
        "need_share": [0.0003, 0.003],  # offsets bought this week / verified emissions
        "types_per_emitter": [1, 2],  # how many credit types one emitter accepts
        "price_sensitivity": 3.0,      # accepts a type with weight ~ reference price^-k
        "deadline_day": 0,             # 1-based compliance deadline; 0 = the last day
        "activity_per_day": 10,        # decisions per day
        "child_t": [20, 300],          # child order size range, tonnes
        "cash_headroom": "1.35",       # cash = need x reference price x headroom
        "valuation": [0.96, 1.08],     # private value / fundamental value, per type
        "deadline_premium": 0.06,      # extra over its value it will pay at the deadline
        "burst": [2, 8],               # child orders in one aggressive run
    },
    "project_owners": {
        "initial_t": [8_000, 30_000],     # opening inventory per owner, tonnes
        "issuance_per_day_t": [0, 300],  # routine batches per owner and day
        "activity_per_day": 16,
        "slice": [0.004, 0.015],         # share of inventory offered per order
        "discount_per_log_inventory": 0.025,  # ask drop per unit of ln(inventory / normal)
        "dump_pressure": 2.5,            # inventory/normal above which owners hit bids
        "valuation": [0.95, 1.07],       # private value / fundamental value
        "burst": [2, 6],                 # child orders in one run of hitting bids
        "cash_cny": 100_000,
    },
    "market_makers": {
        "inventory_t": [2_000, 5_000],   # opening inventory per maker (its own credit type)
        "inventory_limit_t": 2_000,      # max net position away from the opening inventory
        "quote_t": [20, 150],
        "half_spread_ticks": [2, 6],
        "skew_ticks": 6,                 # quote shift at a full inventory limit
        "activity_per_day": 60,
        "cash_cny": 2_000_000,
        "value_weight": 0.3,             # quotes centre: last price moved this far to its view
        "valuation": [0.98, 1.02],       # its view of the fundamental value
    },
    "noise_traders": {
        "cash_cny": [100_000, 600_000],
        "inventory_t": [200, 2_000],    # per credit type held at the start
        "activity_per_day": 8,
        "order_t": [3, 50],           # log-uniform
        "take_probability": 0.2,          # share of orders that cross the spread (IOC)
        "offset_ticks": 12,               # passive orders rest up to this far from the mid
        "max_live_orders": 3,
        "run_alpha": 1.5,                 # split market orders: P(run >= l) ~ l^-alpha
        "valuation": [0.95, 1.05],        # private view of each type's value / fundamental
        "conviction": 8.0,                # P(buy) = 0.5 + conviction x (view - mid) / mid
    },
    "fundamental": {       # ln(value) per credit type, a mean-reverting random walk
        "daily_volatility": 0.015,        # diffusion per trading day
        "mean_reversion_per_day": 0.5,    # rate: the gap to the trend shrinks by exp(-rate) a day
        "drift_per_day": 0.0,             # built-in trend (none unless a scenario asks)
        "news_per_day": 0.2,              # news shocks per type and day
        "news_size": 0.03,                # log size of one shock, either sign
        "issuance_impact_per_mt": 0.05,   # ln(value) drop per Mt of an [[issuance]] batch
    },
    "issuance": [],                       # shocks: [{day, instrument, qty}]
    "compare_rules": [],                  # rule what-if: profiles run on the same seeds
    "lots": {              # credits as lots (project, vintage), Art.10 (see run.py)
        "enabled": True,                  # false: pooled credits per type, as before lots
        "vintages": [2021, 2025],         # vintage years of the generated projects
        "vintages_per_project": [1, 3],   # a generated project's consecutive vintages
        "list_share": 0.5,                # owners: share of their offers on their own listings
        "named_share": 0.5,               # emitters: share of purchases taken from listings
        "vintage_premium": 0.02,          # value per vintage year above the oldest
        "purpose": "2026年度碳排放配额清缴抵销 (CEA compliance offset)",   # of retirements
    },
    "projects": [],        # [[project]] id, instrument (its type's contract), vintages,
                           # optional issuance_t (t moved in per vintage; else the owner's
                           # project_owners.initial_t split over its lots)
}


@dataclass
class Scenario:
    name: str
    days: int
    seed: int
    start_date: date
    fee_ppm: int
    instruments: list[InstrumentSpec]
    agents: dict
    emitters: dict
    project_owners: dict
    market_makers: dict
    noise_traders: dict
    issuance: list[dict]
    fundamental: dict
    compare_rules: tuple = ()     # e.g. ("continuous", "cbeex-2023", "cbeex-2023:holding=1")
    lots: dict = field(default_factory=lambda: copy.deepcopy(DEFAULTS["lots"]))
    projects: list = field(default_factory=list)    # [{id, instrument, vintages}]

    @property
    def symbols(self) -> list[str]:
        return [spec.symbol for spec in self.instruments]

    @property
    def agent_count(self) -> int:
        return sum(self.agents.values())


def _merge(base: dict, override: dict, where: str) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if key not in base:
            raise ValueError(f"unknown scenario key {where}{key!r}; known: {sorted(base)}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ValueError(f"{where}{key} must be a table")
            out[key] = _merge(base[key], value, f"{where}{key}.")
        else:
            out[key] = _checked(base[key], value, f"{where}{key}")
    return out


def _checked(default, value, name: str):
    """The value must have the default's shape: int, number, text, or a [low, high] range."""
    def number(x, integer):
        return type(x) is int or (not integer and type(x) is float)
    if isinstance(default, bool) or default is None or key_is_table_list(default):
        return value
    if isinstance(default, list):
        integer = all(type(x) is int for x in default)
        if (not isinstance(value, list) or len(value) != 2
                or not all(number(x, integer) for x in value) or value[0] > value[1]):
            kind = "whole numbers" if integer else "numbers"
            raise ValueError(f"{name} must be a range [low, high] of {kind}, not {value!r}")
        return value
    if isinstance(default, str):
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise ValueError(f"{name} must be text, e.g. {default!r}")
        return str(value)
    if not number(value, type(default) is int) or value < 0:
        kind = "a whole number" if type(default) is int else "a number"
        raise ValueError(f"{name} must be {kind} >= 0, not {value!r}")
    return value


def key_is_table_list(default) -> bool:
    return isinstance(default, list) and not default   # [[instrument]], [[issuance]]


def load_scenario(path: str | Path | None = None, *, days: int | None = None,
                  seed: int | None = None, overrides: dict | None = None) -> Scenario:
    """Defaults, then the file, then `overrides` (a dict shaped like the file), then flags."""
    data = copy.deepcopy(DEFAULTS)
    if path is not None:
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text())
        except OSError as err:
            raise ValueError(f"cannot read {path}: {err.strerror}") from None
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{path}: not valid TOML: {err}") from None
        if "instrument" in raw:
            raw["instruments"] = raw.pop("instrument")
        if "project" in raw:
            raw["projects"] = raw.pop("project")
        data = _merge(data, raw, "")
    if overrides:
        data = _merge(data, overrides, "")
    if days is not None:
        data["days"] = days
    if seed is not None:
        data["seed"] = seed
    return _build(data)


def _build(data: dict) -> Scenario:
    days, seed = data["days"], data["seed"]
    if type(days) is not int or not 1 <= days <= 250:
        raise ValueError("days must be an integer from 1 to 250")
    if type(seed) is not int:
        raise ValueError("seed must be an integer")
    try:
        start = date.fromisoformat(str(data["start_date"]))
    except ValueError:
        raise ValueError("start_date must be YYYY-MM-DD") from None
    fee_ppm = parse_decimal_units(str(data["fee_rate"]), PPM) if data["fee_rate"] is not None \
        else DEFAULT_FEE_PPM
    if not 0 <= fee_ppm < PPM:
        raise ValueError("fee_rate must be in [0, 1)")
    specs = {spec.symbol: spec for spec in DEFAULT_INSTRUMENTS}
    for row in data["instruments"]:
        if not isinstance(row, dict) or "symbol" not in row:
            raise ValueError("every [[instrument]] needs a symbol")
        fields = specs[row["symbol"]].to_json() if row["symbol"] in specs else {}
        fields.pop("op", None)
        for key, value in row.items():
            if isinstance(value, float):
                raise ValueError(f"instrument {row['symbol']}: {key} must be a decimal string")
            fields[key] = value
        specs[row["symbol"]] = InstrumentSpec.from_fields(**fields)
    agents = data["agents"]
    for key, count in agents.items():
        if type(count) is not int or count < 0:
            raise ValueError(f"agents.{key} must be a non-negative integer")
    if agents["project_owners"] and agents["project_owners"] < len(specs):
        raise ValueError("need at least one project owner per credit type")
    issuance = []
    for row in data["issuance"]:
        if (not isinstance(row, dict) or row.get("instrument") not in specs
                or type(row.get("day")) is not int or not 1 <= row["day"] <= days
                or type(row.get("qty")) is not int or row["qty"] <= 0):
            raise ValueError(f"bad [[issuance]] entry {row!r}: needs day (1..{days}), a known "
                             "instrument and a positive whole qty in tonnes")
        issuance.append(dict(row))
    if issuance and not agents["project_owners"]:
        raise ValueError("[[issuance]] batches go to project owners: agents.project_owners is 0")
    deadline = data["emitters"]["deadline_day"]
    if type(deadline) is not int or not 0 <= deadline <= days:
        raise ValueError(f"emitters.deadline_day must be 0 (last day) or 1..{days}")
    compare = data["compare_rules"]
    if not isinstance(compare, list) or not all(isinstance(x, str) for x in compare) \
            or len(compare) == 1:
        raise ValueError("compare_rules must be a list of two or more rule profiles, e.g. "
                         '["continuous", "cbeex-2023"]')
    lots = data["lots"]
    low, high = lots["vintages"]
    if not MIN_VINTAGE <= low <= high <= MAX_VINTAGE:
        raise ValueError(f"lots.vintages must be years from {MIN_VINTAGE} to {MAX_VINTAGE}")
    for key in ("list_share", "named_share"):
        if not 0 <= lots[key] <= 1:
            raise ValueError(f"lots.{key} must be a share from 0 to 1")
    if not isinstance(lots["enabled"], bool):
        raise ValueError("lots.enabled must be true or false")
    projects = _projects(data["projects"], specs)
    return Scenario(data["name"], days, seed, start, fee_ppm, list(specs.values()), dict(agents),
                    data["emitters"], data["project_owners"], data["market_makers"],
                    data["noise_traders"], issuance, data["fundamental"], tuple(compare),
                    dict(lots), projects)


def _projects(rows, specs) -> list[dict]:
    """[[project]] rows: a registered project of one credit type (`instrument`, its type's
    contract), its id and the vintages its owner moves in."""
    out, seen = [], set()
    for row in rows:
        if (not isinstance(row, dict) or not {"id", "instrument", "vintages"} <= set(row)
                or not set(row) <= {"id", "instrument", "vintages", "issuance_t"}):
            raise ValueError(f"every [[project]] needs id, instrument and vintages (and may "
                             f"give issuance_t), not {row!r}")
        issuance = row.get("issuance_t")
        if issuance is not None and (type(issuance) is not int or issuance <= 0):
            raise ValueError(f"[[project]] {row['id']!r}: issuance_t must be a positive whole "
                             f"number of tonnes (moved in per vintage)")
        symbol = row["instrument"]
        credit_type = STANDARD_CONTRACTS.get(symbol) or (
            specs[symbol].credit_type if symbol in specs and specs[symbol].kind == "contract"
            else None)
        if symbol not in specs or credit_type is None:
            raise ValueError(f"[[project]] {row['id']!r}: instrument must be a credit type's "
                             f"contract ({', '.join(specs)}), not {symbol!r}")
        vintages = row["vintages"]
        if not isinstance(vintages, list) or not vintages:
            raise ValueError(f"[[project]] {row['id']!r}: vintages must be a list of years")
        for vintage in vintages:
            problem = lot_problem(credit_type, row["id"], vintage)
            if problem:
                raise ValueError(f"[[project]] {row['id']!r}: {problem}")
        if row["id"] in seen:
            raise ValueError(f"[[project]] {row['id']!r} is given twice")
        seen.add(row["id"])
        out.append({"id": row["id"], "instrument": symbol,
                    "vintages": sorted(set(vintages)),
                    **({"issuance_t": issuance} if issuance is not None else {})})
    return out
