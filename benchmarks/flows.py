"""Seeded generator of realistic CCER order flow (NDJSON or binary).

Model. A zero-intelligence order-flow model in the style of Cont, Stoikov and Talreja
(2010, "A stochastic model for order book dynamics", Operations Research 58(3)):

* Arrivals. Primary events (new limit orders, market orders, invalid commands) arrive as a
  Poisson process of rate `rate` per second, optionally self-exciting: with
  `hawkes_branching` n > 0 every event spawns Poisson(n) children after Exp(`hawkes_decay_s`)
  delays (the cluster representation of an exponential-kernel Hawkes process), so the mean
  rate becomes rate / (1 - n) and bursts appear as in real markets.
* Limit orders are placed at a distance i >= 1 ticks from the opposite best quote with
  probability proportional to i ** -distance_alpha for i <= max_distance (CST's power law
  k / i^alpha; they fitted alpha ~ 0.52). A share `marketable_share` crosses the spread by
  0-2 ticks (mostly IOC/FOK), which is where trades come from besides market orders.
* Cancellations: every resting order is cancelled at a rate that depends on its distance,
  theta(i) = 1 / (lifetime_s * i ** lifetime_growth) per second (orders near the touch churn
  fastest), with probability `cancel_prob`; the others stay until filled or the end. This
  is CST's per-order cancellation rate, drawn when the order is born, so no book has to be
  simulated and the whole thing vectorises: a cancel command is scheduled at birth +
  Exp(1/theta(i)); if the order was filled first, the engine rejects the cancel
  (order_not_resting), as a real late cancel would be.
* Amends: with probability `amend_prob` an order is amended once before its cancel, either
  its price (+/- 1-3 ticks, loses priority) or its quantity (mostly down, keeps priority).
* Prices: the best quotes are tracked per credit type as a reference mid (integer ticks)
  that moves one tick with each market or marketable order with probability `mid_impact`
  and by noise otherwise, reflected inside +/- `mid_range_pct` of the reference price, so
  valid prices always stay inside the 10% band (they are also clipped to it).
* Sizes are Pareto(size_alpha) with scale size_min_t tonnes (heavy tail: a few orders of
  tens of thousands of tonnes), rounded to 10 t above 100 t and 100 t above 1,000 t, capped
  at the 99,999 t maximum.
* Accounts: `accounts` accounts with Zipf(account_zipf) activity; emitters (key emission
  units) mostly buy, project owners mostly sell.
* Invalid commands: a share `invalid_share` of primary events is wrong on purpose: off-tick
  price, price outside the band, bad quantity (0, negative, above the maximum), cancel or
  amend of an unknown order, unknown instrument, duplicate order id, and malformed lines
  (broken JSON, a float quantity, an unknown side or op).

Same seed and parameters -> same rows -> same bytes. Generation runs in chunks of about
`chunk` events: vectorised NumPy for the model; the only per-row Python is writing NDJSON
text (binary output writes the arrays directly).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from ccerx.engine.core.types import DEFAULT_INSTRUMENTS, InstrumentSpec, ParticipantType

from ccerx.engine.formats.binary import (ABSENT, AMEND, CANCEL, F_ACCOUNT, F_INSTRUMENT, F_OID, F_PRICE, F_QTY,
                     F_SIDE, F_TIF, F_TS, F_TYPE, NEW, RAW, ROW_DTYPE, FlowWriter, json_str,
                     prefixed_ids, render_rows, strings_to_arrays)

START_TS_NS = 1_705_887_000_000_000_000   # 2024-01-22 09:30:00 +08:00 (Beijing), in ns
UNKNOWN_INSTRUMENT = "CCER-XXX"
ORDER_ID_PREFIX = "o"

# invalid kinds (index into FlowParams.invalid_mix)
INV_OFF_TICK, INV_BAND, INV_QTY, INV_UNKNOWN_ORDER, INV_INSTRUMENT, INV_DUPLICATE, INV_MALFORMED = range(7)


@dataclass(frozen=True)
class FlowParams:
    """Parameters of the model (see the module docstring); defaults give a plausible day."""
    instruments: tuple[InstrumentSpec, ...] = DEFAULT_INSTRUMENTS
    instrument_weights: tuple[float, ...] = (0.35, 0.20, 0.30, 0.15)
    rate: float = 2_000.0              # primary (immigrant) events per second
    hawkes_branching: float = 0.5      # 0 = plain Poisson; must be < 1
    hawkes_decay_s: float = 0.002      # mean delay of a child event
    market_share: float = 0.05         # market orders among primary events
    market_fok_share: float = 0.1      # of market orders (the rest are IOC)
    marketable_share: float = 0.03     # limit orders priced through the opposite best
    distance_alpha: float = 0.52       # CST power law of limit distances
    max_distance: int = 40             # ticks from the opposite best quote
    cancel_prob: float = 0.85          # resting orders that are eventually cancelled
    lifetime_s: float = 1.0            # mean life of an order 1 tick from the opposite best
    lifetime_growth: float = 0.7       # life grows as distance ** growth
    amend_prob: float = 0.08
    amend_price_share: float = 0.4     # of amends: price change (else quantity)
    size_min_t: float = 50.0           # Pareto scale of order sizes, tonnes
    size_alpha: float = 1.5            # Pareto tail index
    market_size_scale: float = 0.5     # market orders are smaller
    accounts: int = 200
    account_zipf: float = 1.0
    mid_impact: float = 0.1            # P(mid moves one tick on a market/marketable order)
    mid_noise: float = 0.002           # P(mid moves one tick, either way, on other events)
    mid_range_pct: float = 6.0         # mid reflected inside ref +/- this percent
    invalid_share: float = 0.005
    invalid_mix: tuple[float, ...] = (0.2, 0.15, 0.15, 0.15, 0.05, 0.1, 0.2)
    start_ts_ns: int = START_TS_NS
    chunk: int = 1 << 17

    def __post_init__(self):
        if len(self.instrument_weights) != len(self.instruments):
            raise ValueError("one instrument weight per instrument")
        if not 0 <= self.hawkes_branching < 1:
            raise ValueError("hawkes_branching must be in [0, 1)")
        if self.rate <= 0 or self.accounts < 1 or self.max_distance < 1:
            raise ValueError("rate, accounts and max_distance must be positive")
        shares = self.market_share + self.invalid_share
        if not 0 <= shares < 1:
            raise ValueError("market_share + invalid_share must be below 1")

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        out["instruments"] = [s.symbol for s in self.instruments]
        return out


def account_names(n: int) -> list[str]:
    return [f"ACC{i:04d}" for i in range(1, n + 1)]


def account_types(n: int) -> list[ParticipantType]:
    """40% key emission units, 30% project owners, 20% investment institutions, 10% other."""
    cycle = ([ParticipantType.KEY_EMISSION_UNIT] * 4 + [ParticipantType.PROJECT_OWNER] * 3
             + [ParticipantType.INVESTMENT_INSTITUTION] * 2 + [ParticipantType.OTHER_ORGANISATION])
    return [cycle[i % 10] for i in range(n)]


_BUY_PROB = {ParticipantType.KEY_EMISSION_UNIT: 0.7, ParticipantType.PROJECT_OWNER: 0.3,
             ParticipantType.INVESTMENT_INSTITUTION: 0.5, ParticipantType.OTHER_ORGANISATION: 0.5}


def accounts_file(params: FlowParams = FlowParams()) -> dict:
    """An accounts file for `ccerx replay --accounts` funding every generated account
    generously (emitters hold mostly cash, project owners mostly credits)."""
    rows = []
    for name, ptype in zip(account_names(params.accounts), account_types(params.accounts)):
        cash = {ParticipantType.KEY_EMISSION_UNIT: "2000000000.00",
                ParticipantType.PROJECT_OWNER: "200000000.00"}.get(ptype, "1000000000.00")
        credits = 20_000_000 if ptype is ParticipantType.PROJECT_OWNER else 5_000_000
        rows.append({"account": name, "type": ptype.value, "cash": cash,
                     "credits": {s.symbol: credits for s in params.instruments}})
    return {"fee_rate": "0.006", "accounts": rows}


# ---------------------------------------------------------------------------- the model
@dataclass
class Chunk:
    rows: np.ndarray                    # ROW_DTYPE, order_id = index k of "o{k}"
    raw: list[str] = field(default_factory=list)   # raw lines referenced by this chunk
    raw_base: int = 0                   # global index of raw[0]


class FlowGenerator:
    """Yields chunks of rows in time order; `generate(n)` stops after exactly n rows."""

    def __init__(self, seed: int, params: FlowParams = FlowParams()):
        self.p = params
        self.rng = np.random.default_rng(seed)
        self.n_ins = len(params.instruments)
        self.ref = np.array([s.ref_ticks for s in params.instruments], dtype=np.int64)
        self.lo_band = np.array([s.min_ticks for s in params.instruments], dtype=np.int64)
        self.hi_band = np.array([s.max_ticks for s in params.instruments], dtype=np.int64)
        self.tick_units = np.array([s.tick_units for s in params.instruments], dtype=np.int64)
        self.max_qty = np.array([s.max_qty for s in params.instruments], dtype=np.int64)
        span = np.maximum((self.ref * params.mid_range_pct / 100).astype(np.int64), 2)
        self.mid_lo = np.maximum(self.ref - span, self.lo_band + 2)
        self.mid_hi = np.minimum(self.ref + span, self.hi_band - 2)
        self.walk = np.zeros(self.n_ins, dtype=np.int64)   # unreflected mid walk
        w = np.asarray(params.instrument_weights, dtype=float)
        self.ins_p = w / w.sum()
        ranks = np.arange(1, params.accounts + 1, dtype=float)
        zipf = ranks ** -params.account_zipf
        self.acc_p = zipf / zipf.sum()
        self.buy_p = np.array([_BUY_PROB[t] for t in account_types(params.accounts)])
        d = np.arange(1, params.max_distance + 1, dtype=float)
        dist_p = d ** -params.distance_alpha
        self.dist_cdf = np.cumsum(dist_p / dist_p.sum())
        inv = np.asarray(params.invalid_mix, dtype=float)
        self.inv_p = inv / inv.sum()
        self.t = 0.0
        self.next_oid = 0
        self.raw_count = 0
        self.hawkes_carry = np.zeros(0)
        self.pending = np.zeros(0, dtype=ROW_DTYPE)
        self.pending_t = np.zeros(0)
        total_rate = params.rate / (1 - params.hawkes_branching)
        self.window = params.chunk / total_rate / 1.8   # ~1.8 commands per primary event

    # ------------------------------------------------------------------ arrivals
    def _arrivals(self, t0: float, t1: float) -> np.ndarray:
        rng, p = self.rng, self.p
        n = rng.poisson(p.rate * (t1 - t0))
        times = t0 + rng.uniform(0.0, t1 - t0, n)
        if p.hawkes_branching > 0:
            generations = [times]
            parents = times
            while len(parents):
                kids = rng.poisson(p.hawkes_branching, len(parents))
                parents = np.repeat(parents, kids) + rng.exponential(p.hawkes_decay_s, kids.sum())
                generations.append(parents)
            times = np.concatenate(generations + [self.hawkes_carry])
            late = times >= t1
            self.hawkes_carry = times[late]
            times = times[~late]
        times.sort(kind="stable")
        return times

    def _mids(self, ins: np.ndarray, steps: np.ndarray) -> np.ndarray:
        """Reference mid (ticks) seen by each event, before its own impact."""
        mids = np.empty(len(ins), dtype=np.int64)
        for j in range(self.n_ins):
            idx = np.flatnonzero(ins == j)
            if not len(idx):
                continue
            walk = self.walk[j] + np.cumsum(steps[idx]) - steps[idx]
            self.walk[j] += steps[idx].sum()
            lo, width = self.mid_lo[j], self.mid_hi[j] - self.mid_lo[j]
            start = self.ref[j] - lo
            y = np.mod(start + walk, 2 * width)         # reflect the walk inside [lo, hi]
            mids[idx] = lo + np.where(y > width, 2 * width - y, y)
        return mids

    def _sizes(self, n: int, scale: float) -> np.ndarray:
        p = self.p
        raw = p.size_min_t * scale * (1.0 - self.rng.random(n)) ** (-1.0 / p.size_alpha)
        q = np.minimum(raw, 1e6).astype(np.int64)
        q = np.where(q >= 1000, (q // 100) * 100, np.where(q >= 100, (q // 10) * 10, q))
        return np.clip(q, 1, None)

    # ------------------------------------------------------------------ one chunk
    def next_chunk(self) -> Chunk:
        rng, p = self.rng, self.p
        t0, t1 = self.t, self.t + self.window
        self.t = t1
        times = self._arrivals(t0, t1)
        n = len(times)
        ins = rng.choice(self.n_ins, size=n, p=self.ins_p)
        acc = rng.choice(p.accounts, size=n, p=self.acc_p)
        buy = rng.random(n) < self.buy_p[acc]
        u = rng.random(n)
        is_market = u < p.market_share
        is_invalid = (u >= p.market_share) & (u < p.market_share + p.invalid_share)
        is_limit = ~(is_market | is_invalid)
        marketable = is_limit & (rng.random(n) < p.marketable_share)
        dist = np.searchsorted(self.dist_cdf, rng.random(n), side="right") + 1
        dist = np.where(marketable, -rng.integers(0, 3, n), dist)   # 0..-2: through the best
        # mid impact: market/marketable orders push the mid their way, noise otherwise
        sign = np.where(buy, 1, -1)
        aggressive = is_market | marketable
        steps = np.where(aggressive, (rng.random(n) < p.mid_impact) * sign,
                         (rng.random(n) < p.mid_noise) * np.where(rng.random(n) < 0.5, 1, -1))
        mids = self._mids(ins, steps.astype(np.int64))
        price = np.where(buy, mids + 1 - dist, mids - 1 + dist)
        price = np.clip(price, self.lo_band[ins], self.hi_band[ins])
        qty = np.where(is_market, self._sizes(n, p.market_size_scale), self._sizes(n, 1.0))
        qty = np.minimum(qty, self.max_qty[ins])

        rows = np.zeros(n, dtype=ROW_DTYPE)
        rows["op"] = NEW
        rows["ts"] = p.start_ts_ns + (times * 1e9).astype(np.int64)
        rows["instrument"] = ins
        rows["account"] = acc
        rows["side"] = np.where(buy, 0, 1)
        rows["otype"] = np.where(is_market, 1, 0)
        rows["qty"] = qty
        rows["price"] = np.where(is_market, 0, price * self.tick_units[ins])
        base = F_TS | F_OID | F_ACCOUNT | F_INSTRUMENT | F_SIDE | F_TYPE | F_QTY
        rows["flags"] = np.where(is_market, base, base | F_PRICE)
        tif = np.full(n, ABSENT, dtype=np.uint8)
        v = rng.random(n)
        tif[is_market & (v < p.market_fok_share)] = 2
        tif[marketable & (v < 0.5)] = 1
        tif[marketable & (v >= 0.5) & (v < 0.6)] = 2
        rows["tif"] = tif
        rows["flags"] |= np.where(tif != ABSENT, F_TIF, 0).astype(np.uint16)
        # every primary event takes the next order id (the invalid pass may override)
        oids = self.next_oid + np.arange(n, dtype=np.int64)
        self.next_oid += n
        rows["order_id"] = oids
        raw = self._invalidate(rows, np.flatnonzero(is_invalid), ins)

        # cancels and amends of the new resting day orders, scheduled from their birth
        resting = is_limit & ~marketable & (rows["tif"] == ABSENT)
        self._schedule(rows[resting], times[resting], dist[resting])
        due = self.pending_t < t1
        rows = np.concatenate([rows, self.pending[due]])
        times = np.concatenate([times, self.pending_t[due]])
        self.pending, self.pending_t = self.pending[~due], self.pending_t[~due]
        order = np.argsort(times, kind="stable")
        rows = rows[order]
        raw_base = self.raw_count
        self.raw_count += len(raw)
        if raw:
            raw_rows = np.flatnonzero(rows["op"] == RAW)
            rows["order_id"][raw_rows] += raw_base
        return Chunk(rows, raw, raw_base)

    def _schedule(self, born: np.ndarray, times: np.ndarray, dist: np.ndarray) -> None:
        rng, p = self.rng, self.p
        n = len(born)
        if not n:
            return
        life = rng.exponential(p.lifetime_s * dist.astype(float) ** p.lifetime_growth)
        cancel = rng.random(n) < p.cancel_prob
        amend = rng.random(n) < p.amend_prob
        c = np.zeros(int(cancel.sum()), dtype=ROW_DTYPE)
        c["op"] = CANCEL
        c["flags"] = F_TS | F_OID
        c["side"] = c["otype"] = c["tif"] = ABSENT
        c["account"] = -1
        c["instrument"] = -1
        c["order_id"] = born["order_id"][cancel]
        ct = times[cancel] + life[cancel]
        a_src = born[amend]
        m = len(a_src)
        a = np.zeros(m, dtype=ROW_DTYPE)
        a["op"] = AMEND
        a["side"] = a["otype"] = a["tif"] = ABSENT
        a["account"] = -1
        a["instrument"] = -1
        a["order_id"] = a_src["order_id"]
        by_price = rng.random(m) < p.amend_price_share
        ins = a_src["instrument"].astype(np.int64)
        step = rng.integers(1, 4, m) * np.where(rng.random(m) < 0.5, 1, -1)
        new_ticks = np.clip(a_src["price"] // self.tick_units[ins] + step,
                            self.lo_band[ins], self.hi_band[ins])
        a["price"] = np.where(by_price, new_ticks * self.tick_units[ins], 0)
        old_q = a_src["qty"]
        up = rng.random(m) < 0.3
        factor = np.where(up, rng.uniform(1.1, 2.0, m), rng.uniform(0.3, 0.9, m))
        new_q = np.clip((old_q * factor).astype(np.int64), 1, self.max_qty[ins])
        a["qty"] = np.where(by_price, 0, new_q)
        a["flags"] = F_TS | F_OID | np.where(by_price, F_PRICE, F_QTY)
        at = times[amend] + life[amend] * rng.uniform(0.1, 0.9, m)
        new_rows = np.concatenate([c, a])
        new_t = np.concatenate([ct, at])
        new_rows["ts"] = p.start_ts_ns + (new_t * 1e9).astype(np.int64)
        self.pending = np.concatenate([self.pending, new_rows])
        self.pending_t = np.concatenate([self.pending_t, new_t])

    def _invalidate(self, rows: np.ndarray, idx: np.ndarray, ins: np.ndarray) -> list[str]:
        """Turn the selected rows into invalid commands; returns new raw lines."""
        rng = self.rng
        if not len(idx):
            return []
        kinds = rng.choice(len(self.inv_p), size=len(idx), p=self.inv_p)
        raw: list[str] = []
        tick = self.tick_units[ins[idx]]
        for kind in range(len(self.inv_p)):
            sel = idx[kinds == kind]
            k = len(sel)
            if not k:
                continue
            if kind == INV_OFF_TICK:
                rows["price"][sel] += tick[kinds == kind] // 2
            elif kind == INV_BAND:
                j = ins[sel]
                out = rng.integers(1, 50, k)
                rows["price"][sel] = np.where(rng.random(k) < 0.5, self.hi_band[j] + out,
                                              np.maximum(self.lo_band[j] - out, 1)) * self.tick_units[j]
            elif kind == INV_QTY:
                choice = rng.integers(0, 3, k)
                rows["qty"][sel] = np.where(choice == 0, 0, np.where(
                    choice == 1, -rows["qty"][sel], self.max_qty[ins[sel]] + rng.integers(1, 1000, k)))
            elif kind == INV_UNKNOWN_ORDER:
                amend = rng.random(k) < 0.5
                rows["op"][sel] = np.where(amend, AMEND, CANCEL)
                rows["flags"][sel] = np.where(amend, F_TS | F_OID | F_QTY, F_TS | F_OID)
                rows["side"][sel] = rows["otype"][sel] = rows["tif"][sel] = ABSENT
                rows["account"][sel] = -1
                rows["instrument"][sel] = -1
                rows["price"][sel] = 0
            elif kind == INV_INSTRUMENT:
                rows["instrument"][sel] = self.n_ins   # the unknown symbol's table index
            elif kind == INV_DUPLICATE:
                rows["order_id"][sel] = (rng.random(k) * rows["order_id"][sel]).astype(np.int64)
            else:
                for i in sel.tolist():
                    r = rows[i]
                    raw.append(self._malformed_line(int(rng.integers(0, 5)), r))
                    rows[i] = (RAW, ABSENT, ABSENT, ABSENT, 0, -1, -1, len(raw) - 1, 0, 0, 0)
                    # (order_id holds the raw index, made global by the caller)
        return raw

    def _malformed_line(self, variant: int, r) -> str:
        ts, oid, symbol = int(r["ts"]), f"{ORDER_ID_PREFIX}{int(r['order_id'])}", \
            self.p.instruments[int(r["instrument"])].symbol
        if variant == 0:
            return f'{{"op":"new","ts":{ts},"order_id":"{oid}","account":'      # cut off
        if variant == 1:
            return (f'{{"op":"new","ts":{ts},"order_id":"{oid}","account":"ACC0001",'
                    f'"instrument":"{symbol}","side":"buy","type":"limit","price":"70.00",'
                    f'"qty":1.5}}')
        if variant == 2:
            return (f'{{"op":"new","ts":{ts},"order_id":"{oid}","account":"ACC0001",'
                    f'"instrument":"{symbol}","side":"hold","type":"limit","price":"70.00",'
                    f'"qty":10}}')
        if variant == 3:
            return f'{{"op":"replace","ts":{ts},"order_id":"{oid}"}}'
        return f'["new",{ts},"{oid}"]'

    # ------------------------------------------------------------------ driving
    def generate(self, n_rows: int) -> Iterator[Chunk]:
        done = 0
        while done < n_rows:
            chunk = self.next_chunk()
            take = min(len(chunk.rows), n_rows - done)
            if take < len(chunk.rows):
                rows = chunk.rows[:take]
                raw_rows = rows["order_id"][rows["op"] == RAW]
                keep = int(raw_rows.max()) + 1 - chunk.raw_base if len(raw_rows) else 0
                chunk = Chunk(rows, chunk.raw[:keep], chunk.raw_base)
            done += take
            if take:
                yield chunk

    def instrument_names(self) -> list[str]:
        return [s.symbol for s in self.p.instruments] + [UNKNOWN_INSTRUMENT]


def write_flow(path, seed: int, n_rows: int, params: FlowParams = FlowParams(),
               fmt: Optional[str] = None,
               progress: Optional[Callable[[int], None]] = None) -> dict:
    """Generate n_rows commands into `path` (format by `fmt` or the suffix); returns a summary."""
    path = Path(path)
    fmt = fmt or ("binary" if path.suffix.lower() in (".npz", ".ccxb") else "ndjson")
    gen = FlowGenerator(seed, params)
    accounts = account_names(params.accounts)
    instruments = gen.instrument_names()
    counts = np.zeros(5, dtype=np.int64)
    done = 0
    raw_all: list[str] = []
    meta = {"generator": {"seed": seed, "commands": n_rows, "params": params.to_json()}}
    if fmt == "ndjson":
        acc_json = [json_str(a) for a in accounts]
        ins_json = [json_str(s) for s in instruments]
        with open(path, "wb") as out:
            for chunk in gen.generate(n_rows):
                rows = chunk.rows
                oid_list = rows["order_id"].tolist()
                has = (rows["flags"] & F_OID).astype(bool).tolist()
                oids = [f'"{ORDER_ID_PREFIX}{k}"' if h else None for k, h in zip(oid_list, has)]
                raw = _RawView(chunk.raw, chunk.raw_base)
                out.write(("\n".join(render_rows(rows, oids, acc_json, ins_json, raw)) + "\n")
                          .encode())
                counts += np.bincount(rows["op"], minlength=5)
                done += len(rows)
                if progress is not None:
                    progress(done)
    elif fmt == "binary":
        writer = FlowWriter(path, n_rows)
        max_oid = -1
        try:
            for chunk in gen.generate(n_rows):
                rows = chunk.rows
                writer.write(rows)
                raw_all.extend(chunk.raw)
                ids = rows["order_id"][(rows["flags"] & F_OID) != 0]
                if len(ids):
                    max_oid = max(max_oid, int(ids.max()))
                counts += np.bincount(rows["op"], minlength=5)
                done += len(rows)
                if progress is not None:
                    progress(done)
            tables = {"oid": prefixed_ids(ORDER_ID_PREFIX, max_oid + 1),
                      "account": strings_to_arrays([a.encode() for a in accounts]),
                      "instrument": strings_to_arrays([s.encode() for s in instruments]),
                      "raw": strings_to_arrays([s.encode() for s in raw_all])}
            writer.close(tables, meta)
        except BaseException:
            writer.zip.close()
            path.unlink(missing_ok=True)
            raise
    else:
        raise ValueError(f"unknown format {fmt!r}; expected ndjson or binary")
    return {"commands": done, "new": int(counts[NEW]), "cancel": int(counts[CANCEL]),
            "amend": int(counts[AMEND]), "raw": int(counts[RAW]), "format": fmt,
            "seed": seed, "path": str(path)}


class _RawView:
    def __init__(self, raw: list[str], base: int):
        self.raw, self.base = raw, base

    def __getitem__(self, i: int) -> str:
        return self.raw[i - self.base]


def write_accounts(path, params: FlowParams = FlowParams()) -> None:
    Path(path).write_text(json.dumps(accounts_file(params), indent=1) + "\n")
