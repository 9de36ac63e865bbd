"""The session report: trades.csv, summary.json, PNG charts and one report.html.

Everything is computed from the run's record (trades, book samples, day closes, agents'
opening and closing balances); prices are formatted from integer ticks with the
instrument's spec and money from integer fen. Charts use matplotlib's Agg backend.
"""
from __future__ import annotations

import csv
import html
import json
import warnings
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import numpy as np

from ccerx.engine.core.types import format_fen

from ccerx.scripts.simulate.agents import Emitter, MarketMaker, NoiseTrader, ProjectOwner
from ccerx.scripts.simulate.calendar import MINUTES_PER_DAY, SimulatedDays
from ccerx.scripts.simulate.stylized import measure_all
from ccerx.scripts.tables import group_thousands

GROUPS = ((Emitter, "emitters (key emission units)"), (ProjectOwner, "project owners"),
          (MarketMaker, "investment institutions (market makers)"), (NoiseTrader, "noise traders"))
TRADE_COLUMNS = ("trade_id", "day", "time", "ts_ns", "instrument", "price", "qty",
                 "buy_account", "sell_account", "aggressor", "buy_fee", "sell_fee", "lots")


@dataclass
class DayStats:
    instrument: str
    day: int
    date: str
    open: int | None
    high: int | None
    low: int | None
    last: int | None
    volume: int
    trades: int
    turnover_fen: int
    close: int          # the engine's close (VWAP, or previous close without trades)
    reference: int      # the reference price the day traded around (previous close)
    spread_mean: float | None
    spread_median: float | None
    depth_bid: float
    depth_ask: float

    def vwap_text(self, tick_fen: int) -> str:
        if not self.volume:
            return "-"
        # turnover_fen / volume is CNY*100 per tonne: show 4 decimals of CNY
        value = Decimal(self.turnover_fen) / Decimal(self.volume) / 100
        return str(value.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP))


def cny(fen: int) -> str:
    """Cash for people: 1234567.80 CNY as "1,234,567.80"."""
    return group_thousands(format_fen(fen))


def per_mille(ppm: int) -> str:
    """A rate in parts per million as per-mille text: 6000 -> "6", 2500 -> "2.5"."""
    whole, rest = divmod(ppm, 1000)
    return f"{whole}" if not rest else f"{whole}.{rest:03d}".rstrip("0")


def day_stats(result) -> dict[str, list[DayStats]]:
    out = {s: [] for s in result.scenario.symbols}
    by_key: dict[tuple[str, int], list] = {}
    for t in result.trades:
        by_key.setdefault((t[3], t[1]), []).append(t)
    reference = {s: result.specs[s].ref_ticks for s in out}
    for s in out:
        spec = result.specs[s]
        samples = result.samples[s]
        for record in result.days:
            rows = by_key.get((s, record.day), [])
            prices = [t[4] for t in rows]
            volume = sum(t[5] for t in rows)
            turnover = sum(t[4] * t[5] for t in rows) * spec.tick_fen
            day_samples = samples[record.day * MINUTES_PER_DAY:(record.day + 1) * MINUTES_PER_DAY]
            spreads = [a - b for _, _, b, a, _, _ in day_samples if a is not None and b is not None]
            close = record.closes[s].close_ticks if s in record.closes else reference[s]
            out[s].append(DayStats(
                s, record.day, record.date, prices[0] if prices else None,
                max(prices) if prices else None, min(prices) if prices else None,
                prices[-1] if prices else None, volume, len(rows), turnover, close, reference[s],
                float(np.mean(spreads)) if spreads else None,
                float(np.median(spreads)) if spreads else None,
                float(np.mean([x[4] for x in day_samples])) if day_samples else 0.0,
                float(np.mean([x[5] for x in day_samples])) if day_samples else 0.0))
            reference[s] = close
    return out


def lots_text(lots) -> str:
    """A trade's delivered lots for trades.csv: "PROJECT@VINTAGE:t;..." ("" if pooled)."""
    return ";".join(f"{p}@{v}:{q}" for p, v, q in lots if p is not None)


def write_trades_csv(result, path: Path) -> None:
    specs = result.specs
    fmt = SimulatedDays.format_ts
    lots = result.trade_lots
    with path.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(TRADE_COLUMNS)
        for trade_id, day, ts, s, price, qty, buyer, seller, aggressor, bfee, sfee in result.trades:
            w.writerow((trade_id, day + 1, fmt(ts), ts, s, specs[s].ticks_to_text(price), qty,
                        buyer, seller, aggressor, format_fen(bfee), format_fen(sfee),
                        lots_text(lots.get(trade_id, ()))))


def agent_pnl(result) -> list[dict]:
    """P&L of every agent marked at the final closes: (closing cash + credits at close)
    - (opening cash + credits at close) - (issued credits at close), fees included. A lot is
    marked at its listing's close, else at its type contract's; retired credits count at
    that mark too (what they cost is in the cash)."""
    final = result.final_specs
    mark = {s: final[s].ref_ticks * final[s].tick_fen for s in final}
    for s, spec in final.items():
        if spec.kind == "listing":
            mark[spec.holding] = mark[s]
    for key, kind in result.lot_types.items():
        mark.setdefault(key, mark[result.contracts[kind]])
    issued: dict[str, int] = {}
    for _, s, account, qty, _ in result.issuance:
        issued[account] = issued.get(account, 0) + qty * mark[s]
    retired: dict[str, int] = {}
    for x in result.retirements:
        retired[x.account] = retired.get(x.account, 0) + x.qty * mark[x.asset]
    rows = []
    accounts = result.closing
    for agent in result.agents:
        cash0, credits0 = result.opening[agent.account]
        cash1, credits1 = accounts[agent.account]
        cash1 += retired.get(agent.account, 0)
        value0 = cash0 + sum(q * mark[s] for s, q in credits0.items())
        value1 = cash1 + sum(q * mark[s] for s, q in credits1.items())
        rows.append({"agent": agent.agent_id, "account": agent.account, "kind": agent.kind,
                     "pnl_fen": value1 - value0 - issued.get(agent.account, 0),
                     "fees_fen": agent.fees, "trades": agent.trades, "rejects": agent.rejects,
                     "bought_t": sum(agent.bought.values()), "sold_t": sum(agent.sold.values())})
    return rows


def emitter_fulfilment(result) -> dict:
    emitters = [a for a in result.agents if isinstance(a, Emitter)]
    symbols = result.scenario.symbols
    need = {s: sum(e.needs.get(s, 0) for e in emitters) for s in symbols}
    # purchases (of the type's contract and its listings) up to the deadline count; an
    # emitter never buys past its need or deadline
    bought = {s: sum(min(e.bought_type.get(s, 0), e.needs.get(s, 0)) for e in emitters)
              for s in symbols}
    shares = [sum(min(e.bought_type.get(s, 0), q) for s, q in e.needs.items())
              / sum(e.needs.values()) for e in emitters if e.needs]
    return {"emitters": len(emitters), "need_t": need, "bought_t": bought,
            "fully_covered": sum(1 for x in shares if x >= 1.0),
            "median_share": float(np.median(shares)) if shares else None,
            "shares": shares}


def lot_rows(result) -> list[dict]:
    """Per lot (holding key): credit type, project, vintage, its listing, tonnes moved in,
    traded on its listing and delivered by contract trades, retired, held at the end."""
    rows: dict[str, dict] = {}

    def row(key):
        if key not in rows:
            project, _, vintage = key.rpartition("@")
            kind = result.lot_types.get(key, result.specs[key].credit_type
                                        if key in result.specs else "")
            rows[key] = {"lot": key, "credit_type": kind, "project": project or key,
                         "vintage": int(vintage) if project else None, "listing": None,
                         "moved_in_t": 0, "listing_t": 0, "contract_t": 0, "traded_t": 0,
                         "retired_t": 0, "held_t": 0}
        return rows[key]
    for spec in result.final_specs.values():
        if spec.kind == "listing":
            row(spec.holding)["listing"] = spec.symbol
    for d in result.deposits:
        row(d.asset)["moved_in_t"] += d.amount
    specs = result.final_specs
    for trade_id, _, _, s, _, qty, *_ in result.trades:
        spec = specs[s]
        lots = result.trade_lots.get(trade_id) or ((None, None, qty),)
        for project, vintage, q in lots:
            r = row(spec.holding if project is None else f"{project}@{vintage}")
            r["listing_t" if spec.kind == "listing" else "contract_t"] += q
            r["traded_t"] += q
    for x in result.retirements:
        row(x.asset)["retired_t"] += x.qty
    for _, credits in result.closing.values():
        for key, qty in credits.items():
            if key in rows or "@" in key:
                row(key)["held_t"] += qty
    order = {kind: n for n, kind in enumerate(result.contracts)}
    return sorted(rows.values(), key=lambda r: (order.get(r["credit_type"], 99), r["project"],
                                                r["vintage"] or 0))


def retirement_rows(result) -> dict:
    """Per credit type (its contract): emitters' offset need, what they bought and retired."""
    emitters = [a for a in result.agents if isinstance(a, Emitter)]
    symbols = result.scenario.symbols
    retired = {s: 0 for s in symbols}
    for x in result.retirements:
        kind = result.type_of_lot(x.asset)
        retired[kind] = retired.get(kind, 0) + x.qty
    by_emitter: dict[str, int] = {}
    for x in result.retirements:
        by_emitter[x.account] = by_emitter.get(x.account, 0) + x.qty
    met = sum(1 for e in emitters if e.needs and by_emitter.get(e.account, 0) >= sum(e.needs.values()))
    rows = [{"instrument": s, "need_t": sum(e.needs.get(s, 0) for e in emitters),
             "bought_t": sum(e.bought_type.get(s, 0) for e in emitters),
             "retired_t": retired.get(s, 0)} for s in symbols]
    return {"rows": rows, "emitters": len([e for e in emitters if e.needs]), "met": met,
            "need_t": sum(r["need_t"] for r in rows), "retired_t": sum(retired.values()),
            "certificates": len(result.retirements)}


LIQUIDITY = (("spread_ticks", "mean quoted spread, ticks", "{:.2f}"),
             ("depth_t", "depth, best 5 levels both sides, t", "{:,.0f}"),
             ("two_sided_share", "two-sided book, share of minutes", "{:.0%}"),
             ("volume_t", "volume per day, t", "{:,.0f}"),
             ("maker_trades", "market-maker trades", "{:,.0f}"),
             ("maker_volume_t", "market-maker volume, t (both sides)", "{:,.0f}"),
             ("maker_round_trip_t", "market-maker round trips, t (bought and sold)", "{:,.0f}"))


def liquidity_means(seeds: list[dict]) -> dict:
    out = {}
    for key, _, _ in LIQUIDITY:
        xs = [x[key] for x in seeds if key in x and x[key] == x[key]]
        out[key] = float(np.mean(xs)) if xs else None
    return out


def _change(new: float, old: float, fewer: str = "fewer", more: str = "more") -> str:
    if not old:
        return "no change" if not new else "from none"
    pct = round(100 * (new - old) / old)
    return f"{abs(pct)}% {fewer if pct < 0 else more}" if pct else "about the same"


def liquidity_sentence(rule: dict, free: dict) -> str:
    """One sentence, from the numbers, on what the 5-trading-day holding rule (cbeex-2023,
    `rule`) does to liquidity against the continuous market (`free`), same agents and seed."""
    def t(x):
        return f"{x:,.0f} t"
    spread_verb = ("widened" if rule["spread_ticks"] > free["spread_ticks"] else
                   "narrowed" if rule["spread_ticks"] < free["spread_ticks"] else "stayed")
    depth_word = ("thinner" if rule["depth_t"] < free["depth_t"] else
                  "deeper" if rule["depth_t"] > free["depth_t"] else "as deep")
    return (f"Under cbeex-2023 the 5-trading-day holding rule (Art.29) lets a market maker trade "
            f"only one side of its credit type for 5 trading days, so it cannot round-trip: "
            f"market makers' round trips went from {t(free['maker_round_trip_t'])} to "
            f"{t(rule['maker_round_trip_t'])} "
            f"({_change(rule['maker_round_trip_t'], free['maker_round_trip_t'])}) and their "
            f"volume from {t(free['maker_volume_t'])} to {t(rule['maker_volume_t'])} "
            f"({_change(rule['maker_volume_t'], free['maker_volume_t'], 'less', 'more')}); "
            f"the quoted spread {spread_verb} from {free['spread_ticks']:.2f} to "
            f"{rule['spread_ticks']:.2f} ticks, the book was {depth_word} "
            f"({t(free['depth_t'])} to {t(rule['depth_t'])} on the best five levels) and "
            f"two-sided {rule['two_sided_share']:.0%} of the minutes instead of "
            f"{free['two_sided_share']:.0%}, and the market traded {t(rule['volume_t'])} a day "
            f"instead of {t(free['volume_t'])}.")


def liquidity_summary(comparison: dict[str, list[dict]] | None) -> dict | None:
    """cbeex-2023 against continuous, when both were run: means over the seeds and the
    sentence saying what the holding rule does."""
    if not comparison or "cbeex-2023" not in comparison or "continuous" not in comparison:
        return None
    rule, free = liquidity_means(comparison["cbeex-2023"]), liquidity_means(comparison["continuous"])
    if any(v is None for v in (*rule.values(), *free.values())):
        return None
    return {"seeds": [x["seed"] for x in comparison["cbeex-2023"]], "cbeex-2023": rule,
            "continuous": free, "sentence": liquidity_sentence(rule, free)}


def _liquidity_html(liquidity: dict) -> str:
    e = html.escape
    body = [(e(label), form.format(liquidity["continuous"][key]),
             form.format(liquidity["cbeex-2023"][key])) for key, label, form in LIQUIDITY]
    seeds = ", ".join(map(str, liquidity["seeds"]))
    return ("<h2>What the 5-trading-day rule does to liquidity</h2>"
            f"<p><small>The same scenario, agents and seed ({e(seeds)}) run under both rule "
            "profiles, in process; spread and depth are sampled each minute on the type "
            "contracts, where the market makers quote; volume counts contracts and listings."
            "</small></p>" + _table(("figure", "continuous", "cbeex-2023"), body)
            + f"<p><b>{e(liquidity['sentence'])}</b></p>")


def _lots_html(result, lots: list[dict], retirements: dict) -> str:
    e = html.escape
    parts = ["<h2>Credits by lot</h2><p><small>Every credit is of one lot: credit type, "
             "project, vintage (Art.10). Project owners moved their projects' lots in from "
             "the registry before the first open, declaring a listing per lot (Art.17: "
             "tradable the next trading day under cbeex-2023); market makers' and noise "
             "traders' opening inventories are lots of the same projects. <i>On its listing</i>: "
             "traded on the lot's own listing; <i>by contract</i>: delivered by trades of the "
             "type contract (allocation order: oldest vintage first, then project).</small></p>"]
    parts.append(_table(
        ("lot", "credit type", "listing", "moved in t", "on its listing t", "by contract t",
         "retired t", "held at the end t"),
        [(e(r["lot"]), e(r["credit_type"]), e(r["listing"] or "-"), f"{r['moved_in_t']:,}",
          f"{r['listing_t']:,}", f"{r['contract_t']:,}", f"{r['retired_t']:,}",
          f"{r['held_t']:,}") for r in lots]))
    parts.append("<img src='lots.png' alt='volume and retirements per vintage'>")
    parts.append(f"<h2>Retirements against offset needs</h2><p>{retirements['emitters']} "
                 f"emitters retired (注销) {retirements['retired_t']:,} t under "
                 f"{retirements['certificates']:,} certificates against a need of "
                 f"{retirements['need_t']:,} t; {retirements['met']} met their need in full. "
                 "<small>After each close (when the day's purchases are delivered) every "
                 "emitter retires what it holds of the types it needs, up to its need.</small></p>")
    parts.append(_table(("credit type", "need t", "bought t", "retired t", "retired / need"),
                        [(r["instrument"], f"{r['need_t']:,}", f"{r['bought_t']:,}",
                          f"{r['retired_t']:,}",
                          f"{100 * r['retired_t'] / r['need_t']:.1f}%" if r["need_t"] else "-")
                         for r in retirements["rows"]]))
    return "\n".join(parts)


def _lots_chart(result, lots: list[dict], out: Path) -> None:
    """Per credit type: tonnes per vintage traded on listings, delivered by contract
    trades, and retired."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    kinds = [k for k in result.contracts if any(r["credit_type"] == k for r in lots)]
    fig, axes = plt.subplots(1, max(1, len(kinds)), figsize=(3.4 * max(1, len(kinds)), 3.2),
                             squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        rows = [r for r in lots if r["credit_type"] == kind and r["vintage"] is not None]
        vintages = sorted({r["vintage"] for r in rows})
        x = np.arange(len(vintages))
        series = [(key, label, [sum(r[key] for r in rows if r["vintage"] == v) for v in vintages])
                  for key, label in (("listing_t", "on listings"), ("contract_t", "by contract"),
                                     ("retired_t", "retired"))]
        for n, (_, label, ys) in enumerate(series):
            ax.bar(x + (n - 1) * 0.27, ys, width=0.27, label=label)
        ax.set_xticks(x)
        ax.set_xticklabels([str(v) for v in vintages], fontsize=8)
        ax.set_title(f"{result.contracts[kind]} ({kind})", fontsize=9)
        ax.set_xlabel("vintage", fontsize=8)
    axes[0, 0].set_ylabel("tonnes", fontsize=8)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Per vintage: traded on listings, delivered by contract trades, retired",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "lots.png", dpi=90)
    plt.close(fig)


# ---------------------------------------------------------------------- charts
def _charts(result, stats, facts, fulfilment, out: Path) -> list[tuple[str, str]]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    symbols = result.scenario.symbols
    days = len(result.days)
    charts = []
    x_ticks = [d * MINUTES_PER_DAY for d in range(days)]
    x_labels = [r.date[5:] for r in result.days]

    def timeline(ax):
        for d in range(1, days):
            ax.axvline(d * MINUTES_PER_DAY, color="#bbb", lw=0.6)
        ax.set_xticks(x_ticks)
        ax.set_xticklabels(x_labels, ha="left", fontsize=8)
        ax.set_xlim(0, days * MINUTES_PER_DAY)

    cal = result.calendar
    fig, axes = plt.subplots(len(symbols), 1, figsize=(11, 2.6 * len(symbols)), squeeze=False)
    for ax, s in zip(axes[:, 0], symbols):
        spec = result.specs[s]
        tick_cny = spec.tick_units / 1_000_000
        xs, ps = [], []
        volume = np.zeros(days * MINUTES_PER_DAY // 30 + 1)
        for trade_id, day, ts, sym, price, qty, *_ in result.trades:
            if sym != s:
                continue
            minute = _trading_minute(cal, day, ts)
            xs.append(minute)
            ps.append(price * tick_cny)
            volume[int(minute) // 30] += qty
        ax.plot(xs, ps, lw=0.6, color="#1f5f9f", label="trade price")
        for row in stats[s]:
            left, right = row.day * MINUTES_PER_DAY, (row.day + 1) * MINUTES_PER_DAY
            ax.hlines(row.close * tick_cny, left, right, colors="#d62728", lw=1.2,
                      label="close (VWAP)" if row.day == 0 else None)
            ref = row.reference
            band = spec.band_ppm
            ax.hlines([(ref * (1_000_000 - band) // 1_000_000) * tick_cny,
                       (ref * (1_000_000 + band) // 1_000_000) * tick_cny], left, right,
                      colors="#999", lw=0.6, linestyles="dotted",
                      label="daily band" if row.day == 0 else None)
        ax.set_ylabel(f"{s}\nCNY/t", fontsize=9)
        twin = ax.twinx()
        twin.bar(np.arange(len(volume)) * 30 + 15, volume, width=28, color="#888", alpha=0.35)
        twin.set_ylabel("t per 30 min", fontsize=8)
        ax.set_zorder(twin.get_zorder() + 1)
        ax.patch.set_visible(False)
        timeline(ax)
    axes[-1, 0].set_xlabel("trading day (date; 240 trading minutes each)")
    axes[0, 0].legend(loc="upper left", fontsize=8)
    axes[0, 0].set_title("Trade prices, daily VWAP close and band; volume per 30 minutes (grey)")
    fig.tight_layout()
    fig.savefig(out / "price_volume.png", dpi=90)
    plt.close(fig)
    charts.append(("price_volume.png", "Price and volume per credit type"))

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 6), sharex=True)
    for s in symbols:
        samples = result.samples[s]
        spread = np.array([np.nan if b is None or a is None else a - b
                           for _, _, b, a, _, _ in samples], dtype=float)
        depth = np.array([bd + ad for *_, bd, ad in samples], dtype=float)
        width = 15
        n = len(spread) // width
        xs = np.arange(n) * width + width / 2
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # a quarter hour with no two-sided book
            ax1.plot(xs, np.nanmean(spread[:n * width].reshape(n, width), axis=1), lw=0.9, label=s)
        ax2.plot(xs, depth[:n * width].reshape(n, width).mean(axis=1), lw=0.9, label=s)
    ax1.set_ylabel("quoted spread, ticks")
    ax1.set_title("Spread (15-minute mean) and depth (tonnes on the best 5 levels, both sides)")
    ax2.set_ylabel("depth, t")
    ax2.set_xlabel("trading day (date; 240 trading minutes each)")
    ax1.legend(fontsize=8, ncol=4)
    timeline(ax1)
    timeline(ax2)
    fig.tight_layout()
    fig.savefig(out / "spread_depth.png", dpi=90)
    plt.close(fig)
    charts.append(("spread_depth.png", "Spread and depth"))

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    xs = [r.day + 1 for r in result.days]
    for s in symbols:
        line, = ax1.plot(xs, [r.emitter_bought.get(s, 0) for r in result.days], marker="o", label=s)
        ax1.axhline(fulfilment["need_t"][s], color=line.get_color(), ls="--", lw=0.8)
    ax1.set_xlabel("trading day")
    ax1.set_ylabel("tonnes")
    ax1.set_xticks(xs)
    ax1.set_title("Emitters' cumulative purchases (dashed: needs)")
    ax1.legend(fontsize=8)
    ax2.hist(np.array(fulfilment["shares"]) * 100, bins=20, range=(0, 100), color="#2a7f62")
    ax2.set_xlabel("share of need covered, %")
    ax2.set_ylabel("emitters")
    ax2.set_title("Fulfilment per emitter")
    fig.tight_layout()
    fig.savefig(out / "emitters.png", dpi=90)
    plt.close(fig)
    charts.append(("emitters.png", "Emitters' purchases against their needs"))

    fig, axes = plt.subplots(1, 4, figsize=(14, 3.4))
    for f in facts:
        if f.returns is not None and len(f.returns) and f.returns.std() > 0:
            z = (f.returns - f.returns.mean()) / f.returns.std()
            hist, edges = np.histogram(z, bins=41, range=(-8, 8), density=True)
            axes[0].semilogy((edges[:-1] + edges[1:]) / 2, np.where(hist > 0, hist, np.nan),
                             marker=".", lw=0.6, label=f.instrument)
        axes[1].plot(range(1, len(f.abs_acf) + 1), f.abs_acf, marker=".", lw=0.8)
        axes[2].plot(range(1, len(f.sign_acf) + 1), f.sign_acf, marker=".", lw=0.8)
        if f.impact_bins:
            axes[3].loglog([q for q, i in f.impact_bins if i > 0],
                           [i for q, i in f.impact_bins if i > 0], marker="o", lw=0.8)
    grid = np.linspace(-8, 8, 200)
    axes[0].semilogy(grid, np.exp(-grid ** 2 / 2) / np.sqrt(2 * np.pi), "k--", lw=0.8,
                     label="Gaussian")
    axes[0].set_ylim(1e-4, 2)
    axes[0].set_title("trade-to-trade returns", fontsize=9)
    axes[0].set_xlabel("return, standard deviations from the mean", fontsize=8)
    axes[0].set_ylabel("density (log scale)", fontsize=8)
    axes[0].legend(fontsize=7)
    axes[1].set_title("volatility clustering", fontsize=9)
    axes[1].set_xlabel("lag, trades", fontsize=8)
    axes[1].set_ylabel("autocorrelation of |return|", fontsize=8)
    axes[2].set_title("order-sign persistence", fontsize=9)
    axes[2].set_xlabel("lag, aggressive orders", fontsize=8)
    axes[2].set_ylabel("autocorrelation of order sign", fontsize=8)
    axes[3].set_title("price impact", fontsize=9)
    axes[3].set_xlabel("order size, t (log scale)", fontsize=8)
    axes[3].set_ylabel("mid move, ticks (log scale)", fontsize=8)
    for ax in axes[1:3]:
        ax.axhline(0, color="k", lw=0.5)
    fig.tight_layout()
    fig.savefig(out / "stylized.png", dpi=90)
    plt.close(fig)
    charts.append(("stylized.png", "Stylized facts"))
    return charts


def _trading_minute(cal: SimulatedDays, day: int, ts: int) -> float:
    """Position of ts on the chart's timeline: day * 240 + trading minutes since the open."""
    minute_of_clock = (ts - cal.midnight_ns(day)) / 60e9
    trading = sum(min(max(minute_of_clock - a, 0.0), b - a) for a, b in cal.calendar.sessions)
    return day * MINUTES_PER_DAY + min(trading, MINUTES_PER_DAY - 1e-6)


# ---------------------------------------------------------------------- the report
def write_report(result, out_dir: str | Path, baseline=None, seeds: list[dict] | None = None,
                 comparison: dict[str, list[dict]] | None = None) -> dict:
    """Write the report; `baseline` is the same scenario run without its issuance batches
    (same seed), against which the batches' price response is measured; `seeds` the
    per-seed figures of a sweep (sweep.run_seed) for the calibration table and the bands
    (default: this run alone); `comparison` {rule profile: per-seed figures} of a rule
    what-if on the same seeds."""
    from ccerx.scripts.simulate.sweep import run_seed
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if seeds is None:
        seeds = [run_seed(result.scenario, result.scenario.seed, result=result)]
    write_trades_csv(result, out / "trades.csv")
    stats = day_stats(result)
    facts = measure_all(result)
    fulfilment = emitter_fulfilment(result)
    pnl = agent_pnl(result)
    charts = _charts(result, stats, facts, fulfilment, out)
    base_stats = day_stats(baseline) if baseline is not None else None
    if base_stats is not None:
        charts.append(_shock_chart(result, stats, base_stats, out))
    summary = _summary(result, stats, facts, fulfilment, pnl, base_stats)
    calibration = calibration_table(seeds)
    summary["calibration"] = [{"key": r.target.key, "target": r.target.value,
                               "low": r.target.low, "high": r.target.high,
                               "mean": _number(r.mean), "seed_min": _number(r.low),
                               "seed_max": _number(r.high), "within": r.within}
                              for r in calibration]
    summary["seeds"] = [x["seed"] for x in seeds]
    extra = []
    if result.lots:
        lots = lot_rows(result)
        retirements = retirement_rows(result)
        summary["lots"] = lots
        summary["retirements"] = retirements
        _lots_chart(result, lots, out)
        extra.append(_lots_html(result, lots, retirements))
    liquidity = liquidity_summary(comparison)
    if liquidity is not None:
        summary["liquidity"] = liquidity
        extra.append(_liquidity_html(liquidity))
    extra.append(_calibration_html(calibration, seeds))
    if len(seeds) > 1:
        extra.append(_band_chart({"": seeds}, out, "bands.png"))
    if comparison:
        summary["comparison"] = compare_rules(comparison)
        extra.append(_comparison_html(summary["comparison"], comparison))
        extra.append(_band_chart(comparison, out, "rules_closes.png"))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    page = _html(result, stats, facts, fulfilment, pnl, charts, summary, base_stats)
    at = page.index("<h2>Settlement reconciliation")
    page = page[:at] + "\n".join(extra) + "\n" + page[at:]
    (out / "report.html").write_text(page)
    return summary


def _number(x: float) -> float | None:
    """NaN (no trades to measure) as null: summary.json stays valid JSON."""
    return None if x != x else x


def calibration_table(seeds: list[dict]):
    from ccerx.scripts.simulate.calibration import table
    return table([x["calibration"] for x in seeds])


def _calibration_html(rows, seeds) -> str:
    from ccerx.scripts.simulate.calibration import fmt
    e = html.escape
    body = []
    for r in rows:
        t = r.target
        within = {None: "<small>no target</small>", True: "<span class='ok'>within</span>",
                  False: "<span class='no'>outside</span>"}[r.within]
        body.append((f"{e(t.label)}<br><small>{e(t.source)}</small>",
                     "not published" if t.value is None else f"{fmt(t.value)} {e(t.unit)}",
                     "-" if t.low is None else f"{fmt(t.low)} to {fmt(t.high)}<br>"
                     f"<small>{e(t.tolerance)}</small>",
                     fmt(r.mean), f"{fmt(r.low)} to {fmt(r.high)}", within))
    n = len(seeds)
    which = f"seed {seeds[0]['seed']}" if n == 1 else \
        f"{n} seeds ({seeds[0]['seed']} to {seeds[-1]['seed']}): mean, and lowest to highest seed"
    return (f"<h2>Calibration against the observed CCER market</h2><p><small>Targets, sources and "
            f"tolerances: <code>scenarios/calibration.toml</code>. Simulated over {e(which)}; a "
            f"target is met when the mean lies within its tolerance. Rule profile "
            f"{e(seeds[0]['rules'])}.</small></p>"
            + _table(("statistic", "observed", "tolerance", "simulated", "across seeds", ""),
                     body))


def _band_chart(runs: dict[str, list[dict]], out: Path, name: str) -> str:
    """Daily closes per credit type: the median over seeds and the band from the lowest to
    the highest seed, one colour per label (rule profile)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    first = next(iter(runs.values()))
    symbols = list(first[0]["closes"])
    fig, axes = plt.subplots(1, len(symbols), figsize=(3.4 * len(symbols), 3.2), squeeze=False)
    for ax, s in zip(axes[0], symbols):
        for label, seeds in runs.items():
            tick = seeds[0]["tick_cny"][s]
            closes = np.array([x["closes"][s] for x in seeds], dtype=float) * tick
            days = np.arange(1, closes.shape[1] + 1)
            line, = ax.plot(days, np.median(closes, axis=0), marker="o", ms=3,
                            label=label or "median")
            ax.fill_between(days, closes.min(axis=0), closes.max(axis=0), alpha=0.25,
                            color=line.get_color())
        ax.set_title(s, fontsize=9)
        ax.set_xlabel("trading day", fontsize=8)
        ax.set_xticks(days)
    axes[0, 0].set_ylabel("daily close (VWAP), CNY/t", fontsize=8)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"Daily closes over {len(first)} seed(s): median and lowest-highest band",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(out / name, dpi=90)
    plt.close(fig)
    return f"<figure><img src='{name}' alt='closes across seeds'></figure>"


COMPARED = (("volume per day, t", lambda x: x["calibration"]["daily_volume_t"], "{:,.0f}"),
            ("trades", lambda x: x["trades"], "{:,.0f}"),
            ("mean quoted spread, ticks", lambda x: x["spread_ticks"], "{:.2f}"),
            ("two-sided book, share of minutes", lambda x: x["two_sided_share"], "{:.2f}"),
            ("depth, best 5 levels both sides, t", lambda x: x.get("depth_t", float("nan")),
             "{:,.0f}"),
            ("largest daily close move, %", lambda x: x["calibration"]["max_daily_move_pct"],
             "{:.2f}"),
            ("VWAP, CNY/t", lambda x: x["calibration"]["vwap_cny"], "{:.2f}"),
            ("emitters' needs covered", lambda x: x["emitters_covered"], "{:.1%}"),
            ("market-maker trades", lambda x: x["maker_trades"], "{:,.0f}"),
            ("market-maker volume, t (both sides)", lambda x: x["maker_volume_t"], "{:,.0f}"),
            ("market-maker round trips, t (bought and sold)",
             lambda x: x["maker_round_trip_t"], "{:,.0f}"))


def compare_rules(comparison: dict[str, list[dict]]) -> list[dict]:
    """Per compared figure and profile: mean, lowest and highest over the seeds."""
    rows = []
    for label, get, form in COMPARED:
        row = {"figure": label, "format": form}
        for rules, seeds in comparison.items():
            xs = np.array([get(x) for x in seeds], dtype=float)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)     # all NaN: no trades
                row[rules] = {"mean": _number(float(np.nanmean(xs))),
                              "min": _number(float(np.nanmin(xs))),
                              "max": _number(float(np.nanmax(xs)))}
        rows.append(row)
    return rows


def _shown(form: str, x: float | None) -> str:
    return "-" if x is None else form.format(x)


def comparison_text(rows, profiles) -> str:
    """The rule what-if table as plain text (mean over the seeds)."""
    lines = ["| figure | " + " | ".join(profiles) + " |", "|---" * (len(profiles) + 1) + "|"]
    for row in rows:
        lines.append(f"| {row['figure']} | " + " | ".join(
            _shown(row["format"], row[p]["mean"]) for p in profiles) + " |")
    return "\n".join(lines)


def _comparison_html(rows, comparison) -> str:
    profiles = list(comparison)
    seeds = [x["seed"] for x in comparison[profiles[0]]]
    body = []
    for row in rows:
        form = row["format"]
        cells = [html.escape(row["figure"])]
        for p in profiles:
            v = row[p]
            spread = "" if len(seeds) == 1 else \
                f"<br><small>{_shown(form, v['min'])} to {_shown(form, v['max'])}</small>"
            cells.append(_shown(form, v["mean"]) + spread)
        body.append(cells)
    return ("<h2>Rule what-if: the same agents and seeds under each rule profile</h2>"
            f"<p><small>Seeds {html.escape(', '.join(map(str, seeds)))}; mean over the seeds "
            "(lowest to highest below). What to look for: under cbeex-2023 the "
            "5-trading-day holding period (Art.29) lets an account trade only one side of a "
            "type for 5 days, so a market maker quotes one side and cannot round-trip: it "
            "absorbs flow on one side up to its inventory limit; its round trips and the "
            "quoted spread and two-sided share below show what that does to liquidity. "
            "A suffix such as <code>:holding=1</code> or <code>:band=20</code> is the same "
            "profile with that parameter changed.</small></p>"
            + _table(("figure", *profiles), body))


def _shock_chart(result, stats, base_stats, out: Path) -> tuple[str, str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    batches = _batches(result)
    symbols = list(dict.fromkeys(s for _, s, _ in batches))
    fig, axes = plt.subplots(1, len(symbols), figsize=(5.5 * len(symbols), 3.6), squeeze=False)
    for ax, s in zip(axes[0], symbols):
        tick = result.specs[s].tick_units / 1_000_000
        days = [r.day + 1 for r in stats[s]]
        ax.plot(days, [r.close * tick for r in base_stats[s]], marker="o", label="without the batch")
        ax.plot(days, [r.close * tick for r in stats[s]], marker="o", label="with the batch")
        for day, sym, qty in batches:
            if sym == s:
                ax.axvline(day + 1, color="#d62728", ls=":", lw=1)
                ax.annotate(f"+{qty:,} t", (day + 1, ax.get_ylim()[1]), fontsize=8, va="top")
        ax.set_title(f"{s}: daily close (VWAP)", fontsize=10)
        ax.set_xlabel("trading day")
        ax.set_xticks(days)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "issuance_response.png", dpi=90)
    plt.close(fig)
    return ("issuance_response.png", "Price response to the issuance batch")


def _group_rows(pnl):
    rows = []
    for kind_cls, label in GROUPS:
        members = [r for r in pnl if r["kind"] == kind_cls.kind]
        if members:
            rows.append({"group": label, "agents": len(members),
                         "pnl_fen": sum(r["pnl_fen"] for r in members),
                         "fees_fen": sum(r["fees_fen"] for r in members),
                         "trades": sum(r["trades"] for r in members),
                         "bought_t": sum(r["bought_t"] for r in members),
                         "sold_t": sum(r["sold_t"] for r in members),
                         "rejects": sum(r["rejects"] for r in members)})
    return rows


def _summary(result, stats, facts, fulfilment, pnl, base_stats=None) -> dict:
    specs = result.specs
    return {
        "scenario": result.scenario.name, "seed": result.scenario.seed, "mode": result.mode,
        "days": [r.date for r in result.days], "agents": result.scenario.agent_count,
        "commands": result.commands, "trades": len(result.trades), "rejects": result.rejects,
        "wall_s": round(result.wall_s, 3), "reconciled": result.reconciled,
        "instruments": {s: [{"day": r.day + 1, "date": r.date,
                             "open": specs[s].ticks_to_text(r.open) if r.open else None,
                             "high": specs[s].ticks_to_text(r.high) if r.high else None,
                             "low": specs[s].ticks_to_text(r.low) if r.low else None,
                             "last": specs[s].ticks_to_text(r.last) if r.last else None,
                             "vwap": r.vwap_text(specs[s].tick_fen),
                             "close": specs[s].ticks_to_text(r.close),
                             "reference": specs[s].ticks_to_text(r.reference),
                             "volume": r.volume, "trades": r.trades,
                             "turnover": format_fen(r.turnover_fen),
                             "spread_mean_ticks": r.spread_mean, "depth_bid_t": r.depth_bid,
                             "depth_ask_t": r.depth_ask} for r in rows]
                        for s, rows in stats.items()},
        "emitters": {k: v for k, v in fulfilment.items() if k != "shares"},
        "groups": [{**g, "pnl": format_fen(g["pnl_fen"]), "fees": format_fen(g["fees_fen"])}
                   for g in _group_rows(pnl)],
        "issuance_batches": [{"day": d + 1, "instrument": s, "qty": q}
                             for d, s, q in _batches(result)],
        "baseline_closes": None if base_stats is None else {
            s: [specs[s].ticks_to_text(r.close) for r in rows] for s, rows in base_stats.items()},
        "stylized": {f.instrument: {x.name: {"value": x.value, "holds": x.holds} for x in f.facts}
                     for f in facts},
        "reconciliation": [r.reconciliation.summary() if r.reconciliation else "not available"
                           for r in result.days],
    }


def _batches(result):
    total: dict[tuple[int, str], int] = {}
    for day, s, _, qty, kind in result.issuance:
        if kind == "batch":
            total[(day, s)] = total.get((day, s), 0) + qty
    return [(d, s, q) for (d, s), q in sorted(total.items())]


def _table(headers, rows, cls="") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _html(result, stats, facts, fulfilment, pnl, charts, summary, base_stats=None) -> str:
    sc, specs = result.scenario, result.specs
    e = html.escape
    parts = [f"""<!doctype html><html><head><meta charset="utf-8">
<title>ccerx simulation: {e(sc.name)}</title><style>
body{{font-family:system-ui,sans-serif;margin:2em auto;max-width:1180px;color:#222}}
table{{border-collapse:collapse;margin:.6em 0 1.4em;font-size:13px}}
th,td{{border:1px solid #ccc;padding:3px 8px;text-align:right}} th{{background:#f1f4f8}}
td:first-child,th:first-child{{text-align:left}} img{{max-width:100%;border:1px solid #eee}}
.ok{{color:#1b7f3b;font-weight:600}} .no{{color:#b3261e;font-weight:600}} small{{color:#666}}
</style></head><body>
<h1>Simulated CCER trading: {e(sc.name)}</h1>
<p>{len(result.days)} trading day(s) {e(result.days[0].date)} to {e(result.days[-1].date)},
{sc.agent_count:,} agents ({', '.join(f'{v} {k.replace("_", " ")}' for k, v in sc.agents.items())}),
seed {sc.seed}, mode <b>{e(result.mode)}</b>. {result.commands:,} commands, {len(result.trades):,} trades,
fees {per_mille(sc.fee_ppm)}&permil; per side, {result.wall_s:.1f} s of computing.
Continuous trading 09:30-11:30 and 13:00-15:00 (Beijing time, simulated clock); the close is
the day's volume-weighted average price and sets the next day's reference price and &plusmn;band.
Trades: <a href="trades.csv">trades.csv</a>; figures: <a href="summary.json">summary.json</a>.</p>"""]
    if result.mode == "fix":
        parts.append("<p><b>FIX mode.</b> Every order went as a FIX 4.4 message over TCP to "
                     "<code>ccerx serve</code>, one broker session per agent group. At each "
                     "simulated 15:00 the simulator asked the server, through its operator "
                     "socket, to close the day: day orders expired (ExecType C) and the closes "
                     "shown are the server's VWAP closes. Issuance batches were deposited at the "
                     "exchange the same way (with lots: each lot, declaring the owners' listings), "
                     "and so were the emitters' retirements. Balances are reconciled against the brokers' record "
                     "built from the execution reports and deposits; the exchange's own accounts "
                     "and ledger live in the server (its data directory's ledger.sqlite).</p>")
    status = "ok" if result.reconciled else "no"
    parts.append(f"<h2>Settlement reconciliation: <span class='{status}'>"
                 f"{'every tonne and every fen accounted for' if result.reconciled else 'DIFFERENCES'}"
                 "</span></h2><p><small>After every close, the balances of all accounts in the "
                 "exchange (cash, fees paid, credits per lot, retired credits) are compared with an independent "
                 "book of opening balances + issuance + trades and, unless run with --ledger none, "
                 "with the embedded settlement ledger <code>ledger.sqlite</code> that every trade "
                 "reached as a settlement instruction; totals are checked too (cash + fees "
                 "conserved, credits = opening + issued).</small></p><ul>" + "".join(f"<li>{e(x)}</li>" for x in summary["reconciliation"])
                 + "</ul>")
    if result.settlement_note:
        parts.append(f"<p><small>{e(result.settlement_note)}</small></p>")
    for r in result.days:
        if r.reconciliation and r.reconciliation.problems:
            parts.append("<pre>" + e("\n".join(r.reconciliation.problems[:20])) + "</pre>")
    parts.append("<h2>Prices and volume per credit type</h2>")
    for s, rows in stats.items():
        spec = specs[s]
        px = lambda t: spec.ticks_to_text(t) if t is not None else "-"
        parts.append(f"<h3>{e(s)} <small>{e(spec.name)}</small></h3>")
        parts.append(_table(
            ("day", "date", "reference", "open", "high", "low", "last", "VWAP", "close", "volume t",
             "trades", "turnover CNY", "spread mean / median (ticks)", "depth 5 lv bid / ask t"),
            [(r.day + 1, r.date, px(r.reference), px(r.open), px(r.high), px(r.low), px(r.last),
              r.vwap_text(spec.tick_fen), f"<b>{px(r.close)}</b>", f"{r.volume:,}", f"{r.trades:,}",
              cny(r.turnover_fen),
              "-" if r.spread_mean is None else f"{r.spread_mean:.2f} / {r.spread_median:.0f}",
              f"{r.depth_bid:,.0f} / {r.depth_ask:,.0f}") for r in rows]))
    for name, title in charts[:2]:      # figures with captions: the h2 above is the heading
        parts.append(f"<figure><img src='{name}' alt='{e(title)}'>"
                     f"<figcaption><small>{e(title)}</small></figcaption></figure>")
    batches = _batches(result)
    if batches:
        parts.append("<h2>Issuance batches and the price response</h2>")
        if base_stats is None:
            parts.append("<p><small>Run in process to measure the response against the same "
                         "market without the batch.</small></p>")
        else:
            parts.append("<p><small>The same scenario and seed run again without the batches; "
                         "the difference of the closes is the price response.</small></p>")
        rows = []
        for day, s, qty in batches:
            spec = specs[s]
            for d in range(max(0, day - 1), len(stats[s])):
                close = stats[s][d].close
                cells = [d + 1, s, f"{qty:,}" if d == day else "", spec.ticks_to_text(close)]
                if base_stats is not None:
                    base = base_stats[s][d].close
                    cells += [spec.ticks_to_text(base), f"{100 * (close - base) / base:+.2f}%"]
                rows.append(cells)
        headers = ["day", "credit type", "batch t", "close"]
        if base_stats is not None:
            headers += ["close without the batch", "response"]
        parts.append(_table(headers, rows))
        if base_stats is not None:
            parts.append("<img src='issuance_response.png' alt='price response'>")
    need, bought = fulfilment["need_t"], fulfilment["bought_t"]
    parts.append("<h2>Emitters: purchases against needs</h2>")
    parts.append(f"<p>{fulfilment['emitters']} emitters; offsets capped at 5% of verified emissions; "
                 f"{fulfilment['fully_covered']} fully covered by their deadline; median share covered "
                 f"{100 * (fulfilment['median_share'] or 0):.0f}%.</p>")
    parts.append(_table(("credit type", "need t", "bought t", "covered"),
                        [(s, f"{need[s]:,}", f"{bought[s]:,}",
                          f"{100 * bought[s] / need[s]:.1f}%" if need[s] else "-") for s in need]))
    parts.append("<img src='emitters.png' alt='emitters'>")
    parts.append("<h2>Agents: P&amp;L and fees</h2><p><small>P&amp;L marked at the final closes: "
                 "closing value - opening value - value of credits issued to the agent; fees included.</small></p>")
    parts.append(_table(("group", "agents", "P&L CNY", "fees CNY", "trades", "bought t", "sold t",
                         "rejected orders"),
                        [(g["group"], g["agents"], cny(g["pnl_fen"]), cny(g["fees_fen"]),
                          f"{g['trades']:,}", f"{g['bought_t']:,}", f"{g['sold_t']:,}", g["rejects"])
                         for g in _group_rows(pnl)]))
    ranked = sorted(pnl, key=lambda r: (r["pnl_fen"], r["agent"]))
    show = ranked[-5:][::-1] + ranked[:5]
    parts.append("<p>Best and worst five agents:</p>" + _table(
        ("agent", "account", "kind", "P&L CNY", "fees CNY", "trades"),
        [(r["agent"], r["account"], r["kind"], cny(r["pnl_fen"]), cny(r["fees_fen"]),
          r["trades"]) for r in show]))
    if result.rejects:
        parts.append("<p>Orders the exchange rejected, by reason: " + ", ".join(
            f"{e(k)} {v:,}" for k, v in result.rejects.items()) + "</p>")
    parts.append("<h2>Market realism: stylized facts</h2><p><small>Returns are trade-to-trade: "
                 "the log change of the price from one trade to the next within a session (the "
                 "fills of one aggressive order count as one trade). One-minute mid returns "
                 "are mostly exactly zero in a market this thin, so their kurtosis would "
                 "measure the zeros, not the tails. The quoted spread is sampled each minute; "
                 "order signs and impact come from every aggressive order (sign, size, mid "
                 "move).</small></p>")
    rows = []
    names = [x.name for x in facts[0].facts] if facts else []
    for i, name in enumerate(names):
        cells = []
        for f in facts:
            x = f.facts[i]
            mark = "<span class='ok'>holds</span>" if x.holds else "<span class='no'>does not hold</span>"
            value = "-" if x.value is None else f"{x.value:.3f}"
            cells.append(f"{value} {mark}<br><small>{e(x.detail)}</small>")
        held = sum(f.facts[i].holds for f in facts)
        rows.append((f"{e(name)}<br><small>{e(facts[0].facts[i].measure)}; "
                     f"threshold {e(facts[0].facts[i].threshold)}</small>", *cells,
                     f"{held}/{len(facts)}"))
    parts.append(_table(("fact", *[f.instrument for f in facts], "holds in"), rows))
    parts.append("<img src='stylized.png' alt='stylized facts'>")
    parts.append("</body></html>")
    return "\n".join(parts)
