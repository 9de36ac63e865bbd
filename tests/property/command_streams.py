"""Hypothesis strategies for command streams, shared by the differential and invariant tests.

A stream is drawn as abstract steps (plain tuples of small choices) and turned into
engine commands by `build_commands`, so hypothesis shrinks a failure to a short readable
list of steps. Prices cluster around the reference price so that orders cross often, with
the band edges, off-tick prices and hostile values mixed in; ids are mostly fresh, with
reuse (duplicates), cancels/amends of live, filled, cancelled and unknown orders.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from hypothesis import strategies as st

from ccerx.engine.core.commands import (AmendOrder, CancelOrder, DefineInstrument, Deposit, EndOfDay, NewOrder,
                                       Restrict, Retire, SetLimits)
from ccerx.engine.formats.ndjson import parse_command
from ccerx.engine.core.risk import Account, Accounts
from ccerx.engine.core.rules import PROFILES
from ccerx.engine.core.types import InstrumentSpec, price_field


from tests.reference_model import RefAccount, band_limits

# Small instruments whose band edges need the ceil/floor of the formula:
#   CCER-AFF: the default, band [55.80, 68.20]
#   CCER-X:   tick 0.05, lot 10, ref 3.35 (67 ticks), band 7.5% -> [61.975 -> 62, 72.025 -> 72]
#   CCER-Y:   ref 3.33 (333 ticks), band 10% -> [299.7 -> 300, 366.3 -> 366], max qty 50
INSTRUMENT_POOL = (
    InstrumentSpec.from_fields("CCER-AFF", ref_price="62.00"),
    InstrumentSpec.from_fields("CCER-X", tick="0.05", lot=10, max_qty=500, ref_price="3.35",
                               band_pct="7.5"),
    InstrumentSpec.from_fields("CCER-Y", ref_price="3.33", max_qty=50),
)
ACCOUNT_IDS = ("A", "B", "C")
# Lots (issue 11): the afforestation contract, a listing of one lot and a contract of recent
# vintages, over lots of three projects (one of them mangrove), plus lots that are refused
LOT_INSTRUMENTS = (
    InstrumentSpec.from_fields("CCER-AFF", ref_price="62.00"),
    InstrumentSpec.from_fields("AFF-A22", ref_price="62.00", credit_type="afforestation",
                               project="P-A", vintage=2022),
    InstrumentSpec.from_fields("AFF-NEW", ref_price="62.00", credit_type="afforestation",
                               vintage_from=2023),
)
LOTS = (("afforestation", "P-A", 2022), ("afforestation", "P-B", 2023),
        ("afforestation", "P-A", 2024), ("mangrove", "P-M", 2023),
        ("afforestation", "P-M", 2023), ("forest", "P-X", 2023), ("afforestation", "P-A", 1999),
        ("afforestation", "P@B", 2023))
PURPOSES = ("2024年度清缴抵销", "offset", "碳中和　活动", "", "bad\nline", 7)


def scaled(examples: int) -> int:
    """A test's example budget times CCERX_PROPERTY_SCALE (default 1; see conftest.py)."""
    return max(1, int(examples * float(os.environ.get("CCERX_PROPERTY_SCALE", "1"))))


@dataclass(frozen=True)
class Stream:
    instruments: tuple[InstrumentSpec, ...]
    accounts: tuple[tuple[str, int, tuple[tuple[str, int], ...]], ...] | None  # (id, fen, credits)
    steps: tuple
    rules: str = "continuous"       # rule profile name (engine/core/rules.py)

    @property
    def profile(self):
        return PROFILES[self.rules]

    def engine_accounts(self) -> Accounts | None:
        if self.accounts is None:
            return None
        return Accounts([Account(a, cash=cash, credits=dict(credits))
                         for a, cash, credits in self.accounts])

    def model_accounts(self) -> list[RefAccount] | None:
        if self.accounts is None:
            return None
        return [RefAccount(a, cash, dict(credits)) for a, cash, credits in self.accounts]


HOSTILE_LINES = (
    b"not json", b"[1, 2, 3]", b"42", b'"new"', b"{}", b'{"op": null}', b'{"op": "explode"}',
    b'{"op": 7, "order_id": "x"}', b'{"op": "new", "ts": -1, "order_id": "t1"}',
    b'{"op": "new", "ts": "soon"}', b'{"op": "new", "ts": 1e30}',
    b'{"op": "instrument", "symbol": "CCER-Q"}',
    b'{"op": "instrument", "symbol": "CCER-Q", "ref_price": 3.5}',
    b'{"op": "instrument", "symbol": "CCER-Q", "ref_price": "3.00", "lot": "ten"}',
    b'{"op": "new", "order_id": "h1", "account": "A", "instrument": "CCER-AFF", "side": "buy",'
    b' "price": "62.00", "qty": 100000000000000000000000000000}',
    b'{"op": "new", "order_id": ["h2"], "account": "A", "instrument": "CCER-AFF",'
    b' "side": "buy", "price": "62.00", "qty": 1}',
    b'{"op": "cancel"}', b'{"op": "amend", "order_id": {"a": 1}, "qty": 5}',
    b'{"op": "amend", "order_id": "o0"}',
    b'{"op": "new", "order_id": "h3", "account": "A", "instrument": "CCER-AFF", "side": "buy",'
    b' "price": 62.0, "qty": 1}',
)

def weighted(*pairs):
    """One of the strategies, chosen with the given integer weights (st.one_of would give
    every branch the same chance, duplicates included)."""
    return st.sampled_from([strat for weight, strat in pairs for _ in range(weight)]).flatmap(
        lambda strat: strat)


# price choices: ("off", k) k ticks from the reference; ("edge", e) at/just outside the band
# edges; ("raw", value) a hostile edge value (through price_field); ("none", None) no price
_near = st.integers(-3, 3).map(lambda k: ("off", k))
price_choice = weighted((6, _near), (1, st.sampled_from(("lo", "hi")).map(lambda e: ("edge", e))))
bad_price = st.one_of(
    st.sampled_from(("lo-1", "hi+1")).map(lambda e: ("edge", e)),
    st.sampled_from(("62.001", "0", "-62.00", "abc", "1e2", 62.0, 62, "NaN", "0.00", "3.351",
                     "99999999999999999999.00", "")).map(lambda v: ("raw", v)),
    st.just(("none", None)))

# qty choices: ("lots", k) k lots; ("max", d) max_qty + d lots; ("raw", v) hostile value
qty_choice = weighted((12, st.integers(1, 6).map(lambda k: ("lots", k))), (1, st.just(("max", 0))))
bad_qty = st.one_of(st.just(("max", 1)), st.sampled_from(
    (0, -10, 1.5, True, False, "10", None, 7, 2 ** 70)).map(lambda v: ("raw", v)))

# one defect at most per new order, so that most orders are valid and trade
defect = weighted((40, st.none()), (8, st.one_of(
    st.tuples(st.just("order_id"), st.sampled_from(("", 5, None, "x" * 65))),
    st.tuples(st.just("account"), st.sampled_from(("Z", 5, "", None))),
    st.tuples(st.just("instrument"), st.sampled_from(("CCER-NOPE", None, "ccer-aff"))),
    st.tuples(st.just("side"), st.sampled_from(("BUY", None, 1, "short"))),
    st.tuples(st.just("order_type"), st.sampled_from(("stop", None, 0))),
    st.tuples(st.just("tif"), st.sampled_from(("gtc", 3, "DAY", "day"))),  # "day": bad for market
    st.tuples(st.just("price"), bad_price),
    st.tuples(st.just("qty"), bad_qty))))

new_step = st.tuples(
    st.just("new"),
    st.sampled_from(("fresh",) * 12 + ("reuse",)),
    st.integers(0, 2),                               # account index
    st.integers(0, 3),                               # instrument index (mod the symbols)
    st.sampled_from(("buy", "sell")),
    st.sampled_from(("limit",) * 8 + ("market", "market", "take", "take", "take")),
    st.sampled_from((None, None, None, "day", "ioc", "fok")),
    price_choice,
    qty_choice,
    st.booleans(),                                   # carries a ts
    defect,
    weighted((3, st.none()), (2, st.integers(0, 40))),  # a take's target: k-th latest id
)
cancel_step = st.tuples(st.just("cancel"), st.integers(0, 40),
                        st.sampled_from(("id",) * 8 + ("unknown", "none")))
amend_step = st.tuples(
    st.just("amend"), st.integers(0, 40), st.sampled_from(("id",) * 9 + ("unknown",)),
    weighted((3, st.none()), (4, price_choice), (1, bad_price)),
    weighted((3, st.none()), (4, qty_choice), (1, bad_qty)),
)
eod_step = st.just(("eod",))
define_step = st.tuples(st.just("define"), st.integers(0, 2), st.integers(-5, 5))
# deposits: mostly good (credits or cash), sometimes a repeat, unknown account/asset, bad amount
deposit_step = st.tuples(
    st.just("deposit"), st.sampled_from(("fresh",) * 4 + ("repeat", "empty")),
    st.integers(0, 3),                                        # account index (3: unknown)
    st.sampled_from(("instrument",) * 3 + ("CNY", "CCER-NOPE")),
    st.sampled_from((1, 50, 5_000, 2_000_000, 0, -3, "7", 10 ** 15 + 1)))
hostile_step = st.sampled_from(HOSTILE_LINES).map(lambda line: ("line", line))
# (mostly good lots into known accounts, in small batches, so that contract sells spill over
# several lots)
lot_deposit_step = st.tuples(
    st.just("lot_deposit"), st.sampled_from(("fresh",) * 8 + ("repeat",)),
    st.sampled_from((0, 1, 2) * 3 + (3,)), st.sampled_from((0, 1, 2) * 4 + (3, 4, 5, 6, 7)),
    st.sampled_from((1, 2, 2, 3, 40, 0)),
    st.sampled_from((None,) * 5 + (("AFF-B23", "62.00"),) * 2 + (
        ("AFF-A22", "62.00"), ("AFF-B23", "62.005"), ("AFF B", "62.00"))))
retire_step = st.tuples(
    st.just("retire"), st.sampled_from(("fresh",) * 5 + ("repeat",)),
    st.sampled_from((0, 1, 2) * 3 + (3,)),
    st.sampled_from((0, 1, 2) * 3 + (3, 6, "CCER-AFF", "AFF-A22", ("CCER-AFF", 0))),
    st.sampled_from((1, 1, 2, 5, 0, 10 ** 16)),
    st.sampled_from((0, 0, 1, 1, 2) + tuple(range(3, len(PURPOSES)))))

step = weighted((30, new_step), (5, cancel_step), (8, amend_step), (1, hostile_step),
               (1, eod_step), (1, define_step), (2, deposit_step))
# risk-control streams (issue 14): position limits on the accounts' type (other_organisation),
# large-holder reports, restrictions and kills of accounts (and of a member no order has)
limits_step = st.tuples(
    st.just("limits"), st.sampled_from((None, 30, 100, 600, 5_000, 60_000)),
    st.sampled_from((None, None, 100, 1_000, 80_000)),
    st.sampled_from((0, 500_000, 900_000, 1_000_000)), st.integers(0, 5))
restrict_step = st.tuples(
    st.just("restrict"), st.integers(0, 4),                   # account index (3: unknown, 4: member)
    st.sampled_from(("buy", "sell", "both", "none", "kill", "kill", "sideways")))
risk_step = weighted((30, new_step), (5, cancel_step), (8, amend_step), (1, hostile_step),
                     (1, eod_step), (1, define_step), (2, deposit_step), (2, limits_step),
                     (3, restrict_step))
# cbeex-2023 streams: closes more often, so that Art.29 holding periods (5 closes) run out
# within a stream, and fewer amends (all not_permitted)
cbeex_step = weighted((30, new_step), (5, cancel_step), (2, amend_step), (1, hostile_step),
                      (6, eod_step), (1, define_step), (2, deposit_step))


# Art.29 resale probes (lots.py, HOLDING PERIOD): an account holding a lot bought within the
# holding period sells through an instrument that trades it (its listing, a contract), for
# its free tonnes, one more, all it holds, or more than it holds; or ("rebuy") an account
# that sold a listed lot within the period buys it back through its listing
resell_step = st.tuples(st.just("resell"), st.integers(0, 40), st.integers(0, 40),
                        st.sampled_from(("free", "over", "over", "all", "beyond", "rebuy")))
lots_step = weighted((30, new_step), (4, cancel_step), (3, amend_step), (4, eod_step),
                     (12, lot_deposit_step), (5, retire_step), (1, deposit_step),
                     (1, limits_step), (10, resell_step))


@st.composite
def streams(draw, with_accounts=None, min_steps=10, max_steps=60, rules=None, risk=False,
            lots=False):
    if rules is None:
        rules = draw(st.sampled_from(("continuous", "continuous", "cbeex-2023")))
    if lots:
        instruments = LOT_INSTRUMENTS
    else:
        n_instruments = draw(st.integers(1, 2))
        picks = draw(st.permutations(range(len(INSTRUMENT_POOL))))[:n_instruments]
        instruments = tuple(INSTRUMENT_POOL[i] for i in sorted(picks))
    if with_accounts is None:
        with_accounts = draw(st.booleans())
    accounts = None
    if with_accounts:
        rows = []
        for a in ACCOUNT_IDS:
            cash = draw(st.sampled_from((2_000_000, 1_000_000_000) if lots else
                                        (0, 40_000, 200_000, 2_000_000, 2_000_000, 1_000_000_000)))
            amounts = (0, 0, 1, 3) if lots else (0, 3, 20, 60, 60, 5_000)
            credits = tuple((spec.holding, draw(st.sampled_from(amounts))
                             * spec.lot) for spec in instruments)
            rows.append((a, cash, credits))
        accounts = tuple(rows)
    mix = (lots_step if lots else risk_step if risk else step if rules == "continuous"
           else cbeex_step)
    steps = tuple(draw(st.lists(mix, min_size=min_steps, max_size=max_steps)))
    return Stream(instruments, accounts, steps, rules)


def _price_units(spec: InstrumentSpec, choice):
    kind, value = choice
    if kind == "none":
        return None
    if kind == "raw":
        return price_field(value)
    if kind == "off":
        return (spec.ref_ticks + value) * spec.tick_units
    low, high = band_limits(spec)
    ticks = {"lo-1": low - 1, "lo": low, "hi": high, "hi+1": high + 1}[value]
    return ticks * spec.tick_units


def _qty(spec: InstrumentSpec, choice):
    kind, value = choice
    if kind == "lots":
        return value * spec.lot
    if kind == "max":
        return spec.max_qty + value * spec.lot
    return value


def iter_commands(stream: Stream, current_specs, current_resting=None, current_held_back=None,
                  current_rebuys=None):
    """Abstract steps -> engine commands, one at a time. `current_specs()` returns the
    instrument specs in force now (the model's), so that band-edge and near-reference prices
    follow reference moves made by end of day and instrument redefinitions. With
    `current_resting()` ((order id, instrument, side value) of the resting orders, the
    model's), most take targets are listings on the other side that really rest. With
    `current_held_back()` ((account, instrument, free t, held-back t): the model's, for each
    account holding credits the holding period holds back and each instrument trading
    them), a resale probe sells those (with none held back, it takes a resting sell: a
    purchase to resell later); without it the probe is skipped. With `current_rebuys()`
    ((account, listing): the model's, for each account that sold the listing's lot within
    the holding period), a "rebuy" probe buys such a listing back (without any, it resells)."""
    symbols = [s.symbol for s in stream.instruments]
    ids: list[str] = []
    id_symbol: dict[str, str] = {}
    ts = 1_706_000_000_000_000_000
    for i, st_ in enumerate(stream.steps):
        ts += 1_000
        specs = current_specs()
        kind = st_[0]
        if kind == "new":
            _, id_kind, acct, instr, side, otype, tif, price, qty, has_ts, bad, target = st_
            oid = f"o{len(ids)}" if id_kind == "fresh" or not ids else ids[i % len(ids)]
            symbol = symbols[instr % len(symbols)]
            # hypothesis favours repeating the simplest draw; rotating by the step index turns
            # "all zeros" into alternating sides over rotating accounts, which trade
            side = ("buy", "sell")[(side == "sell") ^ (i % 2)]
            fields = {"order_id": oid, "account": ACCOUNT_IDS[(acct + i) % len(ACCOUNT_IDS)],
                      "instrument": symbol, "side": side, "order_type": otype, "tif": tif, "price": price,
                      "qty": qty}
            if otype == "market":  # market orders carry no price and are never day orders
                fields["price"] = ("none", None)
                fields["tif"] = "fok" if tif == "fok" else None
            if otype == "take":    # no price, no tif; sometimes a target listing
                fields["price"] = ("none", None)
                fields["tif"] = None
            if stream.rules != "continuous" and fields["tif"] in ("ioc", "fok") and i % 4:
                fields["tif"] = None    # mostly what the profile permits
            fields["target"] = None
            if otype == "take" and target is not None and ids:
                fields["target"] = ids[-1 - target % len(ids)]
                listings = [oid_ for oid_, symbol_, side_ in current_resting()
                            if symbol_ == symbol and side_ != side] if current_resting else []
                if listings and target % 5 != 4:   # (4: any recent id, resting or not)
                    fields["target"] = listings[target % len(listings)]
            if bad is not None:
                fields[bad[0]] = bad[1]
            if fields["order_id"] == oid and oid not in ids:
                ids.append(oid)
                id_symbol[oid] = symbol
            spec = specs.get(symbol) or specs[symbols[0]]
            yield NewOrder(fields["order_id"], fields["account"], fields["instrument"],
                           fields["side"], fields["order_type"], fields["tif"],
                           _price_units(spec, fields["price"]), _qty(spec, fields["qty"]),
                           ts if has_ts else None, None, fields["target"])
        elif kind == "cancel":
            _, k, target = st_
            oid = (ids[-1 - k % len(ids)] if ids and target == "id"
                   else ("ghost" if target == "unknown" else None))
            yield CancelOrder(oid, ts)
        elif kind == "amend":
            _, k, target, price, qty = st_
            oid = ids[-1 - k % len(ids)] if ids and target == "id" else "ghost"
            spec = specs.get(id_symbol.get(oid)) or specs[symbols[0]]
            yield AmendOrder(oid, None if price is None else _price_units(spec, price),
                             None if qty is None else _qty(spec, qty), ts)
        elif kind == "eod":
            yield EndOfDay(ts)
        elif kind == "define":
            _, which, move = st_
            base = INSTRUMENT_POOL[which]
            spec = base.with_ref_ticks(base.ref_ticks + move)
            if spec.symbol not in symbols:
                symbols.append(spec.symbol)
            yield DefineInstrument(spec, ts)
        elif kind == "deposit":
            _, id_kind, acct, asset, amount = st_
            deposit_id = {"fresh": f"d{i}", "repeat": "d-again", "empty": ""}[id_kind]
            if asset == "instrument":
                asset = symbols[acct % len(symbols)]
            account = (ACCOUNT_IDS + ("NOBODY",))[acct]
            yield Deposit(deposit_id, account, asset, amount, ts)
        elif kind == "limits":
            _, per, total, report_ppm, lift = st_
            rows = () if lift == 0 or (per is None and total is None) else (
                ("other_organisation", per, total),)
            yield SetLimits(rows, report_ppm, ts)
        elif kind == "restrict":
            _, acct, side = st_
            scope, target = ("member", "M1") if acct == 4 else (
                "account", (ACCOUNT_IDS + ("NOBODY",))[acct])
            yield Restrict(scope, target, "both" if side == "kill" else side, side == "kill", ts)
        elif kind == "lot_deposit":
            _, id_kind, acct, which, qty, listing = st_
            deposit_id = f"L{i}" if id_kind == "fresh" else "L-again"
            symbol, price = listing if listing is not None else (None, None)
            if symbol is not None and symbol not in symbols:
                symbols.append(symbol)
            yield Deposit(deposit_id, (ACCOUNT_IDS + ("NOBODY",))[acct], None, qty, ts, None,
                          *LOTS[which], symbol, None if price is None else price_field(price))
        elif kind == "retire":
            _, id_kind, acct, which, qty, purpose = st_
            retire_id = f"R{i}" if id_kind == "fresh" else "R-again"
            account = (ACCOUNT_IDS + ("NOBODY",))[acct]
            if type(which) is int:
                _, project, vintage = LOTS[which]
                yield Retire(retire_id, account, project, vintage, qty, PURPOSES[purpose],
                             None, ts)
            elif type(which) is tuple:     # both a lot and an instrument: malformed
                yield Retire(retire_id, account, "P-A", 2022, qty, PURPOSES[purpose],
                             which[0], ts)
            else:
                yield Retire(retire_id, account, None, None, qty, PURPOSES[purpose], which, ts)
        elif kind == "resell":
            _, k, price, how = st_
            if how == "rebuy" and current_rebuys is not None:
                rebuys = current_rebuys()
                if rebuys:
                    account, symbol = rebuys[k % len(rebuys)]
                    spec = specs[symbol]
                    yield NewOrder(f"r{i}", account, symbol, "buy", "limit", None,
                                   (spec.ref_ticks + price % 3) * spec.tick_units, spec.lot, ts)
                    continue
                # none yet: sell into a resting contract buy (it may deliver a listed lot)
                buys = [symbol_ for _, symbol_, side_ in current_resting()
                        if side_ == "buy" and symbol_ in specs and specs[symbol_].credit_type
                        and not specs[symbol_].project] if current_resting else []
                if buys:
                    yield NewOrder(f"r{i}", ACCOUNT_IDS[k % len(ACCOUNT_IDS)],
                                   buys[price % len(buys)], "sell", "take", None, None,
                                   1 + k % 6, ts)
                    continue
            held = current_held_back() if current_held_back is not None else []
            if not held:        # nothing held back yet: buy something (a take of a listing)
                sells = [symbol_ for _, symbol_, side_ in current_resting()
                         if side_ == "sell"] if current_resting and current_held_back else []
                if sells:
                    yield NewOrder(f"r{i}", ACCOUNT_IDS[k % len(ACCOUNT_IDS)],
                                   sells[price % len(sells)], "buy", "take", None, None,
                                   1 + k % 6, ts)
                continue
            account, symbol, free, back = held[k % len(held)]
            qty = {"free": free, "over": free + 1, "all": free + back,
                   "beyond": free + back + 1, "rebuy": free + back}[how] or 1
            spec = specs[symbol]
            yield NewOrder(f"r{i}", account, symbol, "sell", "limit", None,
                           (spec.ref_ticks + price % 3) * spec.tick_units, qty, ts)
        elif kind == "line":
            yield parse_command(st_[1])
        else:
            raise AssertionError(kind)
