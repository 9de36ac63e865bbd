"""The detectors' parameters: defaults here, overrides from a TOML file (scenarios/surveillance.toml
lists every one with its default; a test keeps the two in sync).

Integers only, as everywhere inside: tonnes, fen, seconds, basis points (1 bp = 0.01 %) and
whole percents. A key the file does not know, a float or a negative number is refused with
the section and key named, so a typo never silently leaves a default in force.
"""
from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field

NS = 1_000_000_000


@dataclass(frozen=True)
class PreDisclosureConfig:
    enabled: bool = True
    issuance_min_t: int = 50_000        # credits deposited at one time that count as an issuance announcement
    lookback_s: int = 172_800           # how far before the disclosure trades are looked at (2 days)
    min_qty_t: int = 5_000              # an account's net one-sided quantity in the lookback
    min_share_pct: int = 20             # ... as a share of the instrument's volume in the lookback
    min_imbalance_pct: int = 80         # net / (bought + sold) of the account: how one-sided


@dataclass(frozen=True)
class WashConfig:
    enabled: bool = True
    window_s: int = 3_600               # trades between a pair are counted over this window
    self_trade_min_qty_t: int = 1       # a trade with the same account on both sides, at least this big
    related_min_trades: int = 2         # trades between related accounts in the window ...
    related_min_qty_t: int = 2_000      # ... or tonnes between them in the window
    round_trip_min_trades: int = 6      # unrelated pair trading both ways: trades in the window ...
    round_trip_min_qty_t: int = 10_000  # ... or tonnes each way in the window


@dataclass(frozen=True)
class RampingConfig:
    enabled: bool = True
    far_from_last_bp: int = 300         # a limit price this far beyond the last trade, in the order's direction
    far_min_qty_t: int = 500            # ... for an order at least this big
    large_order_t: int = 20_000         # one order at least this big
    dense_window_s: int = 120           # same account, instrument and side: orders within this window ...
    dense_min_orders: int = 12          # ... at least this many ...
    dense_min_move_bp: int = 150        # ... while the last price moved this far their way


@dataclass(frozen=True)
class SpoofingConfig:
    enabled: bool = True
    large_order_t: int = 5_000          # an order at least this big ...
    depth_multiple: int = 5             # ... or this many times the same side's depth near the touch (and at least min_order_t)
    min_order_t: int = 1_000
    touch_ticks: int = 5                # "near the touch": within this many ticks of the best price on its side
    cancel_within_s: int = 30           # cancelled by its owner within this time ...
    max_filled_pct: int = 10            # ... having filled at most this share
    otr_min_orders: int = 100           # per account, instrument and day: orders and amends at least ...
    otr_min_ratio: int = 100            # ... this many per trade ...
    otr_min_cancel_pct: int = 80        # ... and at least this share of them cancelled by the owner


@dataclass(frozen=True)
class ValueTransferConfig:
    enabled: bool = True
    window_s: int = 86_400              # transfers between one payer and one receiver summed over this window
    min_deviation_bp: int = 200         # a trade this far from the price others trade at counts
    min_trades: int = 3                 # counted trades one way between the pair ...
    min_transfer_fen: int = 2_000_000   # ... or value moved, fen (20,000.00 CNY)
    reference_trades: int = 50          # recent trades searched for the price others trade at


@dataclass(frozen=True)
class SurveillanceConfig:
    pre_disclosure: PreDisclosureConfig = field(default_factory=PreDisclosureConfig)
    wash: WashConfig = field(default_factory=WashConfig)
    ramping: RampingConfig = field(default_factory=RampingConfig)
    spoofing: SpoofingConfig = field(default_factory=SpoofingConfig)
    value_transfer: ValueTransferConfig = field(default_factory=ValueTransferConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def parse_config(data: dict, where: str = "config") -> SurveillanceConfig:
    """A dict of sections (as TOML gives) -> SurveillanceConfig; raises ValueError."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected tables of detector settings")
    sections = {f.name: f for f in dataclasses.fields(SurveillanceConfig)}
    unknown = sorted(set(data) - set(sections))
    if unknown:
        raise ValueError(f"{where}: unknown section [{unknown[0]}]; expected one of "
                         f"{', '.join(sections)}")
    built = {}
    for name, f in sections.items():
        default = f.default_factory()
        given = data.get(name, {})
        if not isinstance(given, dict):
            raise ValueError(f"{where}: [{name}] must be a table")
        keys = {k.name: k for k in dataclasses.fields(default)}
        changes = {}
        for key, value in given.items():
            if key not in keys:
                raise ValueError(f"{where}: [{name}] has no setting {key!r}; it has "
                                 f"{', '.join(keys)}")
            if key == "enabled":
                if type(value) is not bool:
                    raise ValueError(f"{where}: [{name}] enabled must be true or false")
            elif type(value) is not int or value < 0:
                raise ValueError(f"{where}: [{name}] {key} must be a non-negative integer "
                                 f"(tonnes, fen, seconds, bp or percent), not {value!r}")
            changes[key] = value
        built[name] = dataclasses.replace(default, **changes)
    return SurveillanceConfig(**built)


def load_config(path) -> SurveillanceConfig:
    """Read a TOML file of overrides; None gives the defaults. Raises ValueError."""
    if path is None:
        return SurveillanceConfig()
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid TOML: {err}") from None
    return parse_config(data, str(path))
