"""Credits as lots on the FIX wire: which FIX 4.4 tags carry an instrument's kind and lot, and
the lots a trade delivered (engine/core/lots.py says what they are). One home for the choice;
docs/broker-kit/README.md ("Credits as lots") documents it for brokers.

Only standard FIX 4.4 tags and values are used, so a stock FIX44 dictionary still accepts
every message (no user-defined tags):

  credit type   SecuritySubType (762) "afforestation" | "solar_thermal" | "offshore_wind" |
                "mangrove", with Product (460) 2 COMMODITY, on listings and contracts
  project id    SecurityAltID (455) in NoSecurityAltID (454), SecurityAltIDSource (456) "H"
                (FIX 4.4 "Clearing house / clearing organization": the national CCER registry,
                which registers the credits and delivers them, Art.27-28): a listing's
  vintage       Stipulation (232) StipulationType (233) PROD, FIX 4.4's "Production Year",
                StipulationValue (234) the year the reductions were generated: "2023"; a
                contract's eligible range "2021-2023", "2021-" or "-2023" (none: any)
  kind          InstrAttrib text (871=99) "Kind=listing" | "Kind=contract" (a pooled
                instrument of a flow has none)
  tradable-from InstrAttrib text "TradableFrom=D+1": a new listing (Art.17) that trades N
                trading days after today; absent once it trades
  delivered     an ExecutionReport of a fill whose trade delivered lots carries them in
  lots          NoUnderlyings (711), one instance per lot in delivery order: UnderlyingSymbol
                (311) the lot's holding key "PROJECT@VINTAGE" (for a contract's default lot,
                project and vintage unknown: the contract's own Symbol, and nothing else),
                UnderlyingSecurityAltID (457/458/459=H) the project, UnderlyingQty (879) the
                tonnes, NoUnderlyingStips (887) with UnderlyingStipType (888) PROD and
                UnderlyingStipValue (889) the vintage

Why not others: MaturityDate/MaturityMonthYear and IssueDate say when a security matures or
was issued, not when the reductions were generated (credits of 2021 may be issued in 2024);
ContractMultiplier is a quantity scale; a custom tag (5000+) would make a stock dictionary
reject the message. FIX 4.4 "Other types [of stipulation] may be used by mutual agreement",
but PROD needs no agreement.
"""
from __future__ import annotations

from ccerx.engine.core.lots import lot_key

NO_SECURITY_ALT_ID, SECURITY_ALT_ID, SECURITY_ALT_ID_SOURCE = 454, 455, 456
PRODUCT, SECURITY_SUB_TYPE = 460, 762
NO_STIPULATIONS, STIPULATION_TYPE, STIPULATION_VALUE = 232, 233, 234
NO_UNDERLYINGS, UNDERLYING_SYMBOL, UNDERLYING_QTY = 711, 311, 879
NO_UNDERLYING_SECURITY_ALT_ID, UNDERLYING_SECURITY_ALT_ID = 457, 458
UNDERLYING_SECURITY_ALT_ID_SOURCE = 459
NO_UNDERLYING_STIPS, UNDERLYING_STIP_TYPE, UNDERLYING_STIP_VALUE = 887, 888, 889

REGISTRY = "H"            # SecurityAltIDSource: clearing organization (the CCER registry)
COMMODITY = "2"           # Product
PRODUCTION_YEAR = "PROD"  # StipulationType: the vintage


def identity_fields(spec) -> list[tuple[int, str]]:
    """The Instrument block fields after Symbol for a listing or a contract, in FIX 4.4
    order: the project (SecurityAltID) of a listing, Product, the credit type; [] for a
    pooled instrument."""
    if spec.kind == "pooled":
        return []
    out = []
    if spec.project:
        out += [(NO_SECURITY_ALT_ID, "1"), (SECURITY_ALT_ID, spec.project),
                (SECURITY_ALT_ID_SOURCE, REGISTRY)]
    return out + [(PRODUCT, COMMODITY), (SECURITY_SUB_TYPE, spec.credit_type)]


def vintage_text(spec) -> str:
    """StipulationValue of PROD: the listing's vintage, a contract's range, "" for none."""
    if spec.project:
        return str(spec.vintage)
    if spec.vintage_from or spec.vintage_to:
        return (f"{spec.vintage_from or ''}-{spec.vintage_to or ''}")
    return ""


def attribute_texts(spec, trading_day: int) -> tuple[str, ...]:
    """InstrAttrib texts (871=99) of the kind and, before a listing trades, when it will."""
    if spec.kind == "pooled":
        return ()
    out = (f"Kind={spec.kind}",)
    if spec.tradable_from > trading_day:
        out += (f"TradableFrom=D+{spec.tradable_from - trading_day}",)
    return out


def delivered_lots(symbol: str, lots) -> list[tuple[int, str]]:
    """NoUnderlyings (711) of a fill: the lots delivered, ((project | None, vintage | None,
    qty), ...) as TradeExecuted.lots has them; [] for none."""
    if not lots:
        return []
    out = [(NO_UNDERLYINGS, str(len(lots)))]
    for project, vintage, qty in lots:
        if project is None:          # the contract's default lot (a pooled holding)
            out += [(UNDERLYING_SYMBOL, symbol), (UNDERLYING_QTY, str(qty))]
            continue
        out += [(UNDERLYING_SYMBOL, lot_key(project, vintage)),
                (NO_UNDERLYING_SECURITY_ALT_ID, "1"), (UNDERLYING_SECURITY_ALT_ID, project),
                (UNDERLYING_SECURITY_ALT_ID_SOURCE, REGISTRY), (UNDERLYING_QTY, str(qty)),
                (NO_UNDERLYING_STIPS, "1"), (UNDERLYING_STIP_TYPE, PRODUCTION_YEAR),
                (UNDERLYING_STIP_VALUE, str(vintage))]
    return out
