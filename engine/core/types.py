"""Identifiers, enums and the instrument spec: the vocabulary of the engine.

Integers inside: prices are integer ticks, quantities whole tonnes, cash integer fen.
Decimal text only crosses this module's parse/format helpers, never a float.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields as dataclass_fields, replace
import re
import unicodedata
from enum import Enum
from typing import NamedTuple

from ccerx.engine.core.lots import (CREDIT_TYPES, LOT_SEPARATOR, STANDARD_CONTRACTS, lot_key,
                                    lot_problem)

# Command prices travel as an exact fixed-point integer in millionths of a CNY, so
# an off-tick price is still representable (and rejectable) without Decimal on the
# hot path. 1 tick of 0.01 CNY == 10_000 price units.
PRICE_UNITS_PER_CNY = 1_000_000
FEN_PER_CNY = 100
PRICE_UNITS_PER_FEN = PRICE_UNITS_PER_CNY // FEN_PER_CNY
MAX_PRICE_UNITS = 1_000_000 * PRICE_UNITS_PER_CNY   # 1,000,000.00 CNY/t: above is a typo


class Side(Enum):
    BUY = "buy"
    SELL = "sell"


class OrderType(Enum):
    LIMIT = "limit"
    MARKET = "market"
    TAKE = "take"      # 摘牌: trades only at the best opposite level, never rests (rules.py)


class TimeInForce(Enum):
    DAY = "day"
    IOC = "ioc"
    FOK = "fok"


class CancelReason(Enum):
    USER = "user"      # cancel command
    IOC = "ioc"        # unfilled rest of an immediate-or-cancel limit order
    FOK = "fok"        # fill-or-kill that could not fill completely
    MARKET = "market"  # unfilled rest of a market order (market orders never rest)
    STP = "stp"        # resting order removed by self-trade prevention
    EOD = "eod"        # day order expired at the close
    TAKE = "take"      # unfilled rest of a take order (it never passes the best level)
    KILL = "kill"      # the operator's kill switch of the order's account or member (Art.46)


class RejectReason(Enum):
    MALFORMED = "malformed"
    UNKNOWN_INSTRUMENT = "unknown_instrument"
    INSTRUMENT_BUSY = "instrument_busy"
    INVALID_SIDE = "invalid_side"
    INVALID_TYPE = "invalid_type"
    INVALID_TIF = "invalid_tif"
    INVALID_PRICE = "invalid_price"
    OFF_TICK = "off_tick"
    PRICE_OUT_OF_BAND = "price_out_of_band"
    INVALID_QTY = "invalid_qty"
    QTY_ABOVE_MAX = "qty_above_max"
    QTY_NOT_ABOVE_FILLED = "qty_not_above_filled"
    DUPLICATE_ORDER_ID = "duplicate_order_id"
    ORDER_NOT_RESTING = "order_not_resting"
    NOTHING_TO_AMEND = "nothing_to_amend"
    UNKNOWN_ACCOUNT = "unknown_account"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    INSUFFICIENT_CREDITS = "insufficient_credits"
    MARKET_CLOSED = "market_closed"
    DUPLICATE_DEPOSIT_ID = "duplicate_deposit_id"
    INVALID_AMOUNT = "invalid_amount"
    NOT_PERMITTED = "not_permitted"            # the rule profile forbids this order type/tif/amend
    HOLDING_PERIOD = "holding_period"          # Art.29: too few trading days since the opposite trade
    TARGET_NOT_AT_BEST = "target_not_at_best"  # a take's target listing is not at the best level
    SELF_TRADE = "self_trade"                  # the order would trade with its own account's order
    POSITION_LIMIT = "position_limit"          # Art.37: the buy could take the holding above the limit
    RESTRICTED = "restricted"                  # Art.39/46: the operator restricted this side (or killed)
    UNKNOWN_LOT = "unknown_lot"                # no credits of this project and vintage were ever moved in
    NOT_YET_TRADABLE = "not_yet_tradable"      # Art.17: a new listing trades from the next trading day
    DUPLICATE_RETIRE_ID = "duplicate_retire_id"


CASH_ASSET = "CNY"          # the asset name of cash (in fen) wherever assets are named
MAX_DEPOSIT = 10 ** 15      # tonnes or fen in one deposit (10 trillion CNY): above is a typo


class ParticipantType(Enum):
    """Participant types seen in the CCER registry."""
    KEY_EMISSION_UNIT = "key_emission_unit"
    PROJECT_OWNER = "project_owner"
    INVESTMENT_INSTITUTION = "investment_institution"
    OTHER_ORGANISATION = "other_organisation"


SIDES = {s.value: s for s in Side}
ORDER_TYPES = {t.value: t for t in OrderType}
TIFS = {t.value: t for t in TimeInForce}


class DecimalFormatError(ValueError):
    pass


class PriceError(NamedTuple):
    """A price the edge could not turn into price units; the engine rejects it with this reason."""
    reason: "RejectReason"
    text: str


# ASCII digits only: `\d` and int() also take full-width "１００" and Arabic-Indic "١٠٠", which
# an operator or a broker never means as an amount (and which a log reader cannot check).
_PLAIN_DECIMAL = re.compile(r"(-?)([0-9]{1,18})(?:\.([0-9]{1,18}))?", re.ASCII)


def parse_decimal_units(text: str, units_per_one: int) -> int:
    """Exact decimal text -> integer count of 1/units_per_one; raises DecimalFormatError.

    '62.01' with 1_000_000 -> 62_010_000. Only plain decimals are accepted ('-'? digits,
    optional '.' digits; ASCII 0-9 only): no spaces, '+', exponents, NaN or Infinity. More
    precision than the unit allows is an error. Pure integer arithmetic: no Decimal context,
    no float.
    """
    match = _PLAIN_DECIMAL.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise DecimalFormatError(f"not a plain decimal string: {str(text)[:32]!r}")
    sign, whole, frac = match.groups()
    frac = (frac or "").rstrip("0")
    scale = 10 ** len(frac)
    units, rest = divmod(int(frac or 0) * units_per_one, scale)
    if rest:
        raise DecimalFormatError(f"too many decimal places: {text!r}")
    units += int(whole) * units_per_one
    return -units if sign else units


# Unicode categories a human note may not hold: control characters (SOH, newline, tab, DEL,
# C1), format characters (bidi overrides, zero-width), line/paragraph separators, surrogates.
_NOT_TEXT_CATEGORIES = frozenset(("Cc", "Cf", "Zl", "Zp", "Cs"))


def control_character(text: str) -> str | None:
    """The first character of `text` that has no place in a one-line human note (a control,
    format or separator character; a SOH would inject FIX fields), or None. Chinese, full-width
    punctuation and the ideographic space are text."""
    if text.isascii():
        for char in text:
            if not " " <= char <= "~":
                return char
        return None
    for char in text:
        if unicodedata.category(char) in _NOT_TEXT_CATEGORIES:
            return char
    return None


def parse_price_units(text: str) -> int:
    return parse_decimal_units(text, PRICE_UNITS_PER_CNY)


def format_units(units: int, units_per_one: int, places: int) -> str:
    """Integer units -> decimal text with exactly `places` decimals (units must divide evenly)."""
    sign = "-" if units < 0 else ""
    units = abs(units)
    whole, frac = divmod(units, units_per_one)
    if places == 0:
        return f"{sign}{whole}"
    scale = 10 ** places
    frac_scaled, rest = divmod(frac * scale, units_per_one)
    if rest:
        raise ValueError("value has more precision than the requested places")
    return f"{sign}{whole}.{frac_scaled:0{places}d}"


_price_texts: dict[int, str] = {}


def format_price_units(units: int) -> str:
    """Price units -> the shortest decimal CNY text with at least 2 places ('62.005', '62.00').
    The one price formatter of instrument-free text (edges that know the instrument use
    InstrumentSpec.ticks_to_text, which pads to the tick's places). Memoised: prices repeat."""
    text = _price_texts.get(units)
    if text is None:
        whole, frac = divmod(abs(units), PRICE_UNITS_PER_CNY)
        digits = f"{frac:06d}".rstrip("0").ljust(2, "0")
        text = f"{'-' if units < 0 else ''}{whole}.{digits}"
        if len(_price_texts) < 1 << 16:
            _price_texts[units] = text
    return text


def format_fen(fen: int) -> str:
    """Integer fen -> CNY decimal text, e.g. 620100 -> '6201.00'."""
    return format_units(fen, FEN_PER_CNY, 2)


def parse_cny_to_fen(text: str) -> int:
    return parse_decimal_units(text, FEN_PER_CNY)


@dataclass(frozen=True, slots=True)
class InstrumentSpec:
    """One credit type's trading rules. The scales live here, nowhere else.

    tick_units: tick size in price units (1e-6 CNY); must be a whole number of fen so that
    cash stays integer fen. ref_ticks: reference price (previous close) in ticks.
    band_ppm: the band in parts per million of the reference price (10% = 100_000).
    """
    symbol: str
    tick_units: int = 10_000
    lot: int = 1
    max_qty: int = 99_999
    ref_ticks: int = 6200
    band_ppm: int = 100_000  # 10% as parts per million of the reference price
    name: str = ""
    # What the instrument delivers (lots.py). Not in repr: state hashes of instruments without
    # them stay as they were (Exchange.state_hash adds `lot_fields()` when any is set).
    credit_type: str = field(default="", repr=False)  # contract or listing; "": pooled. The
                                                      # standard symbols default to their type
    project: str = field(default="", repr=False)      # a listing's lot: project id ...
    vintage: int = field(default=0, repr=False)       # ... and vintage year
    vintage_from: int = field(default=0, repr=False)  # a contract's eligible vintages; 0: open
    vintage_to: int = field(default=0, repr=False)
    tradable_from: int = field(default=0, repr=False)  # first trading day (Art.17: a new
                                                       # listing trades from the next day)
    # derived, precomputed because the hot path reads them on every order
    min_ticks: int = field(init=False, repr=False, compare=False)
    max_ticks: int = field(init=False, repr=False, compare=False)
    tick_fen: int = field(init=False, repr=False, compare=False)
    min_units: int = field(init=False, repr=False, compare=False)  # band limits in price units
    max_units: int = field(init=False, repr=False, compare=False)
    holding: str = field(init=False, repr=False, compare=False)    # the holding key it trades

    def __post_init__(self) -> None:
        if not self.symbol or not isinstance(self.symbol, str):
            raise ValueError("instrument symbol must be a non-empty string")
        if self.tick_units <= 0 or self.tick_units % PRICE_UNITS_PER_FEN:
            raise ValueError("tick must be a positive whole number of fen (0.01 CNY)")
        if self.lot <= 0 or self.max_qty < self.lot:
            raise ValueError("lot must be positive and not above max_qty")
        if self.ref_ticks <= 0:
            raise ValueError("reference price must be positive")
        if not 0 <= self.band_ppm < 1_000_000:
            raise ValueError("band must be in [0, 100) percent")
        # valid prices: ceil(ref*(1-band)/tick) <= P/tick <= floor(ref*(1+band)/tick), exact integers
        setattr_ = object.__setattr__
        setattr_(self, "min_ticks", max(1, -((-self.ref_ticks * (1_000_000 - self.band_ppm)) // 1_000_000)))
        setattr_(self, "max_ticks", (self.ref_ticks * (1_000_000 + self.band_ppm)) // 1_000_000)
        setattr_(self, "tick_fen", self.tick_units // PRICE_UNITS_PER_FEN)
        setattr_(self, "min_units", self.min_ticks * self.tick_units)
        setattr_(self, "max_units", self.max_ticks * self.tick_units)
        if not self.credit_type and self.symbol in STANDARD_CONTRACTS:
            setattr_(self, "credit_type", STANDARD_CONTRACTS[self.symbol])
        problem = ""
        if self.project:
            problem = lot_problem(self.credit_type, self.project, self.vintage)
            if self.vintage_from or self.vintage_to:
                problem = problem or "a listing has one vintage, not a vintage range"
        elif self.credit_type:
            if self.credit_type not in CREDIT_TYPES:
                problem = f"credit_type must be one of {', '.join(CREDIT_TYPES)}"
            elif self.vintage:
                problem = "a contract names no vintage (give vintage_from/vintage_to)"
            elif (self.vintage_from and self.vintage_to and self.vintage_from > self.vintage_to):
                problem = "vintage_from must not be after vintage_to"
        elif self.vintage or self.vintage_from or self.vintage_to:
            problem = "vintages need a credit_type"
        if problem:
            raise ValueError(problem)
        setattr_(self, "holding", lot_key(self.project, self.vintage) if self.project
                 else self.symbol)

    @property
    def kind(self) -> str:
        """"listing" (one lot), "contract" (any eligible lot of a type) or "pooled"."""
        return "listing" if self.project else ("contract" if self.credit_type else "pooled")

    def lot_fields(self) -> tuple:
        """The lot attributes in constructor order after `name`, or () when none is set
        beyond what the symbol implies (so rows and hashes of older instruments stay as
        they were)."""
        fields = (self.credit_type, self.project, self.vintage, self.vintage_from,
                  self.vintage_to, self.tradable_from)
        if fields == (STANDARD_CONTRACTS.get(self.symbol, ""), "", 0, 0, 0, 0):
            return ()
        return fields

    def eligible(self, lot) -> bool:
        """Whether a contract may deliver `lot` (a lots.Lot)."""
        return (lot.credit_type == self.credit_type
                and (not self.vintage_from or lot.vintage >= self.vintage_from)
                and (not self.vintage_to or lot.vintage <= self.vintage_to))

    def __reduce__(self) -> tuple:
        # pickle and copy rebuild a spec from its fields (compiled, a frozen dataclass has no
        # way to set them one by one)
        return type(self), tuple(getattr(self, f.name) for f in dataclass_fields(self) if f.init)

    def ticks_to_text(self, ticks: int) -> str:
        return format_units(ticks * self.tick_units, PRICE_UNITS_PER_CNY, self.price_places)

    @property
    def price_places(self) -> int:
        places, units = 0, self.tick_units
        while units % PRICE_UNITS_PER_CNY and places < 6:
            units *= 10
            places += 1
        return max(places, 2)

    def with_ref_ticks(self, ref_ticks: int) -> "InstrumentSpec":
        return InstrumentSpec(self.symbol, self.tick_units, self.lot, self.max_qty, ref_ticks,
                              self.band_ppm, self.name, *self.lot_fields())

    def with_tradable_from(self, day: int) -> "InstrumentSpec":
        return replace(self, tradable_from=day)

    def to_json(self) -> dict:
        return {"op": "instrument", "symbol": self.symbol,
                "tick": format_units(self.tick_units, PRICE_UNITS_PER_CNY, self.price_places),
                "lot": self.lot, "max_qty": self.max_qty,
                "ref_price": self.ticks_to_text(self.ref_ticks),
                "band_pct": _ppm_to_pct_text(self.band_ppm), "name": self.name,
                **self.lot_json()}

    def lot_json(self) -> dict:
        """The lot attributes set beyond what the symbol implies (none for older instruments)."""
        if not self.lot_fields():
            return {}
        out: dict = {"credit_type": self.credit_type}
        if self.project:
            out.update(project=self.project, vintage=self.vintage)
        for key in ("vintage_from", "vintage_to", "tradable_from"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out

    @classmethod
    def from_fields(cls, symbol, tick="0.01", lot=1, max_qty=99_999, ref_price=None,
                    band_pct=10, name="", credit_type="", project="", vintage=0,
                    vintage_from=0, vintage_to=0) -> "InstrumentSpec":
        """Build a spec from edge values (decimal strings / ints); raises ValueError."""
        problem = symbol_problem(symbol)
        if problem:
            raise ValueError(problem)
        tick_units = parse_price_units(_as_decimal_text(tick, "tick"))
        if ref_price is None:
            raise ValueError("ref_price is required")
        ref_units = parse_price_units(_as_decimal_text(ref_price, "ref_price"))
        if ref_units > MAX_PRICE_UNITS:
            raise ValueError("ref_price must be at most 1000000.00 CNY per tonne")
        if tick_units <= 0 or ref_units % tick_units:
            raise ValueError("ref_price must be a positive whole number of ticks")
        band = parse_decimal_units(_as_decimal_text(band_pct, "band_pct"), 10_000)  # % -> ppm
        for value, label in ((lot, "lot"), (max_qty, "max_qty")):
            if type(value) is not int:
                raise ValueError(f"{label} must be an integer")
        if not isinstance(name, str) or control_character(name) is not None:
            raise ValueError("name must be one line of plain text (no control characters): "
                             "brokers are sent it")
        for value, label in ((vintage, "vintage"), (vintage_from, "vintage_from"),
                             (vintage_to, "vintage_to")):
            if type(value) is not int:
                raise ValueError(f"{label} must be an integer year")
        if not isinstance(credit_type, str) or not isinstance(project, str):
            raise ValueError("credit_type and project must be strings")
        return cls(symbol, tick_units, lot, max_qty, ref_units // tick_units, band, name,
                   credit_type, project, vintage, vintage_from, vintage_to)


def symbol_problem(symbol) -> str:
    """Why `symbol` cannot name a new instrument, or "". It travels as FIX Symbol (55), which
    brokers send and match as plain ASCII; a Chinese name goes in `name` (sent as
    EncodedSecurityDesc). Checked where instruments are defined from outside only, so a
    journal written before the rule still replays."""
    if (not isinstance(symbol, str) or not symbol or not (symbol.isascii() and symbol.isprintable())
            or " " in symbol):
        return (f"instrument symbol {str(symbol)[:32]!r} must be printable ASCII without "
                "spaces (put a Chinese name in `name`)")
    if LOT_SEPARATOR in symbol:      # (a lot key is PROJECT@VINTAGE: lots.py)
        return f"instrument symbol {symbol[:32]!r} may not contain {LOT_SEPARATOR!r}"
    return ""


def _as_decimal_text(value, label: str) -> str:
    if type(value) is int:
        return str(value)
    if isinstance(value, str):
        return value
    raise ValueError(f"{label} must be a decimal string or an integer, not {value!r}")


def _ppm_to_pct_text(ppm: int) -> str:
    text = format_units(ppm, 10_000, 4).rstrip("0").rstrip(".")
    return text


# The four CCER credit types with their default previous closes (CNY/t).
DEFAULT_INSTRUMENTS: tuple[InstrumentSpec, ...] = (
    InstrumentSpec.from_fields("CCER-AFF", ref_price="62.00", name="afforestation carbon sink"),
    InstrumentSpec.from_fields("CCER-SOL", ref_price="75.50", name="grid-connected solar thermal power"),
    InstrumentSpec.from_fields("CCER-OWF", ref_price="81.20", name="grid-connected offshore wind power"),
    InstrumentSpec.from_fields("CCER-MGV", ref_price="95.00", name="mangrove restoration"),
)




def price_field(value):
    """Edge value of a price field -> int price units, None, or a PriceError for the engine."""
    if value is None:
        return None
    if type(value) is not str:
        return PriceError(RejectReason.INVALID_PRICE, "price must be a decimal string, e.g. \"62.01\"")
    try:
        return parse_price_units(value)
    except DecimalFormatError:
        if _PLAIN_DECIMAL.fullmatch(value):
            return PriceError(RejectReason.OFF_TICK, f"price {value[:32]!r} is not a multiple of the tick")
        return PriceError(RejectReason.INVALID_PRICE, f"not a plain decimal price: {value[:32]!r}")
