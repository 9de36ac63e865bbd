"""The broker kit's data dictionary: a QuickFIX-style FIX 4.4 XML of what this gateway speaks.

    python -m ccerx.gateway.fix.gen_broker_dictionary > docs/broker-kit/FIX44-CCERX.xml

A broker connects a stock FIX engine (QuickFIX/J, QuickFIX/n, QuickFIX C++/Python) with
`DataDictionary=FIX44-CCERX.xml`. The engine validates what the gateway sends against it, and
a generated message API (QuickFIX/J's code generator) offers only what the gateway reads.

Theory of operation. Everything about a field (number, name, type), the header and trailer,
and each message's layout (order, required flags, repeating groups) comes from the gateway's
own dictionary, fix44_spec.py, the data its session validates every inbound message with.
This module only chooses the subset, in three tables:

    MESSAGES      the message types the gateway accepts or sends, and per message the fields
                  it reads or writes (every field FIX 4.4 requires is kept: the subset of a
                  message is still a valid FIX 4.4 message); Text (58) and SecurityDesc
                  (107) bring their encoded forms (codec.ENCODED_FIELDS: 354/355, 350/351),
                  which carry non-ASCII text such as Chinese, with MessageEncoding 347=UTF-8
    ENUM_VALUES   per enumerated field, the values the gateway uses, taken from the constants
                  the gateway's code uses (translate.py, marketdata.py, dictionary.Reason)
    NAMES         QuickFIX's names for those values (the `description` attribute)

and checks on the way that every table entry exists in FIX 4.4, so the kit can neither invent
a tag nor drift from the gateway: tests/integration/test_broker_kit.py compares the committed
XML with this output and validates a live session's messages against it.

Four fields keep every FIX 4.4 value although the gateway acts on only a few: Side (54),
OrdType (40), TimeInForce (59) and MassCancelRequestType (530, echoed in a refused r). A NewOrderSingle with Side 5 is refused by an
ExecutionReport that echoes Side 5; a dictionary without that value would make the broker's
engine reject the gateway's rejection. The gateway uses no custom (user-defined) fields; its
one extension of FIX 4.4 is the take order (OrdType Q with RefOrderID 1080, both from FIX 5.0
SP1 with their FIX 5.0 meaning), which fix44_spec.py holds as EXTENSION_TAGS (gen_spec.py).
Credits as lots travel in standard FIX 4.4 tags as well (gateway/fix/lots.py): the credit
type, project and vintage of an instrument in SecurityList (y) and snapshots (W), the lots a
fill delivered in the ExecutionReport's NoUnderlyings (711).
"""
from __future__ import annotations

import sys
from typing import Union
from xml.sax.saxutils import quoteattr

from ccerx.gateway import marketdata as md
from ccerx.gateway.fix import fix44_spec as spec
from ccerx.gateway.fix import lots
from ccerx.gateway.fix import translate as tr
from ccerx.gateway.fix.codec import ENCODED_FIELDS
from ccerx.gateway.fix.dictionary import Reason

Layout = list[Union[int, tuple[int, "Layout"]]]   # a tag, or (NumInGroup tag, its members)

# msg type -> (who sends it, the fields the gateway reads or writes), in FIX 4.4 order
MESSAGES: dict[str, tuple[str, Layout]] = {
    "0": ("both", [112]),
    "1": ("both", [112]),
    "2": ("both", [7, 16]),
    "3": ("both", [45, 371, 372, 373, 58]),
    "4": ("both", [123, 36]),
    "5": ("both", [58]),
    "A": ("both", [98, 108, 141, 553, 554]),
    "D": ("broker", [11, 1, 55, 54, 60, 38, 40, 44, 59, 1080]),
    "F": ("broker", [41, 37, 11, 55, 54, 60]),
    "G": ("broker", [37, 41, 11, 1, 55, 54, 60, 38, 40, 44, 59]),
    "H": ("broker", [37, 11, 790, 1, 55, 54]),
    "g": ("broker", [335, 336, 263]),
    "V": ("broker", [262, 263, 264, 265, 266, (267, [269]), (146, [55])]),
    "x": ("broker", [320, 559, 55]),
    "8": ("gateway", [37, 11, 41, 790, 17, 150, 39, 103, 1, 55,
                      (711, [311, (457, [458, 459]), 879, (887, [888, 889])]),
                      54, 38, 40, 44, 59, 32, 31, 151, 14, 6, 60, 12, 13, 58]),
    "9": ("gateway", [37, 11, 41, 39, 1, 60, 434, 102, 58]),
    "j": ("gateway", [45, 372, 379, 380, 58]),
    "h": ("gateway", [335, 336, 340, 567, 58]),
    "W": ("gateway", [262, 55, (454, [455, 456]), 460, 762, (268, [269, 270, 271, 346, 290])]),
    "X": ("gateway", [262, (268, [279, 269, 55, 270, 271, 346])]),
    "Y": ("gateway", [262, 281, 58]),
    "q": ("broker", [11, 530, 55, 54, 60]),
    "r": ("gateway", [11, 37, 530, 531, 532, 533, 55, 54, 60, 58]),
    "B": ("gateway", [148, (33, [58])]),
    "y": ("gateway", [320, 322, 560, 393, 893,
                      (146, [55, (454, [455, 456]), 460, 762, 107, (870, [871, 872]), 15,
                             (232, [233, 234]), 561, 562, 58])]),
}
SENDER = {"both": "either side", "broker": "broker to gateway", "gateway": "gateway to broker"}

_YES_NO = ("Y", "N")
# tag -> the values the gateway uses (None: every FIX 4.4 value, see the module docstring)
ENUM_VALUES: dict[int, tuple[str, ...] | None] = {
    35: tuple(MESSAGES),
    43: _YES_NO, 97: _YES_NO, 123: _YES_NO, 141: _YES_NO, 266: _YES_NO, 893: _YES_NO,
    347: ("UTF-8",),
    98: ("0",),                                              # no encryption (use TLS)
    54: None, 40: None, 59: None,
    150: (tr.NEW, tr.CANCELED, tr.REPLACED, tr.REJECTED, tr.EXPIRED, tr.TRADE, tr.STATUS),
    39: (tr.NEW, tr.PARTIAL, tr.FILLED, tr.CANCELED, tr.REJECTED, tr.EXPIRED),
    103: tuple(sorted(set(tr.ORD_REJ_REASON_OF.values()) | {tr.OTHER}, key=int)),
    102: (tr.CXL_TOO_LATE, tr.CXL_UNKNOWN, tr.CXL_EXCHANGE_OPTION, tr.CXL_DUPLICATE, tr.OTHER),
    434: ("1", "2"),
    13: ("3",),                                              # Commission in CNY
    380: (tr.BMR_OTHER, tr.BMR_UNSUPPORTED, tr.BMR_NOT_AVAILABLE, tr.BMR_FIELD_MISSING),
    373: tuple(str(int(r)) for r in Reason),
    263: (tr.SNAPSHOT, tr.SNAPSHOT_AND_UPDATES, tr.UNSUBSCRIBE),
    340: (tr.TRAD_SES_HALTED, tr.TRAD_SES_OPEN, tr.TRAD_SES_CLOSED, tr.TRAD_SES_REQUEST_REJECTED),
    567: (tr.UNKNOWN_TRADING_SESSION,),
    265: ("0", "1"),
    269: tuple(sorted(md.SUPPORTED_ENTRY_TYPES)),
    279: (md.ACTION_NEW, md.ACTION_CHANGE, md.ACTION_DELETE),
    281: tuple(sorted((md.REJ_UNKNOWN_SYMBOL, md.REJ_DUPLICATE_ID, md.REJ_SUBSCRIPTION_TYPE,
                      md.REJ_DEPTH, md.REJ_UPDATE_TYPE, md.REJ_AGGREGATED, md.REJ_ENTRY_TYPE))),
    559: ("0", "4"),                                         # one Symbol, or all of them
    560: ("0", "1", "2"),
    871: ("99",),                                             # text attribute "Name=value"
    233: ("PRICE", lots.PRODUCTION_YEAR),                    # the daily price band "low-high",
                                                             # the vintage (gateway/fix/lots.py)
    460: (lots.COMMODITY,),
    530: None,                  # echoed in the report (r) even when refused: every value
    531: (tr.MASS_CANCEL_REFUSED, tr.MASS_CANCEL_SYMBOL, tr.MASS_CANCEL_ALL),
    532: (tr.MASS_REJ_NOT_SUPPORTED, tr.MASS_REJ_UNKNOWN_SECURITY, tr.OTHER),
}

# QuickFIX's name for each value (the FIX 4.4 repository's), for the values above
NAMES: dict[int, dict[str, str]] = {
    43: {"Y": "YES", "N": "NO"}, 97: {"Y": "YES", "N": "NO"}, 123: {"Y": "YES", "N": "NO"},
    141: {"Y": "YES", "N": "NO"}, 266: {"Y": "YES", "N": "NO"}, 893: {"Y": "YES", "N": "NO"},
    347: {"UTF-8": "UTF8"},
    98: {"0": "NONE"},
    54: {"1": "BUY", "2": "SELL", "3": "BUY_MINUS", "4": "SELL_PLUS", "5": "SELL_SHORT",
         "6": "SELL_SHORT_EXEMPT", "7": "UNDISCLOSED", "8": "CROSS", "9": "CROSS_SHORT",
         "A": "CROSS_SHORT_EXEMPT", "B": "AS_DEFINED", "C": "OPPOSITE", "D": "SUBSCRIBE",
         "E": "REDEEM", "F": "LEND", "G": "BORROW"},
    40: {"1": "MARKET", "2": "LIMIT", "3": "STOP", "4": "STOP_LIMIT", "6": "WITH_OR_WITHOUT",
         "7": "LIMIT_OR_BETTER", "8": "LIMIT_WITH_OR_WITHOUT", "9": "ON_BASIS",
         "D": "PREVIOUSLY_QUOTED", "E": "PREVIOUSLY_INDICATED", "G": "FOREX_SWAP", "I": "FUNARI",
         "J": "MARKET_IF_TOUCHED", "K": "MARKET_WITH_LEFT_OVER_AS_LIMIT",
         "L": "PREVIOUS_FUND_VALUATION_POINT", "M": "NEXT_FUND_VALUATION_POINT", "P": "PEGGED",
         "Q": "COUNTER_ORDER_SELECTION"},
    59: {"0": "DAY", "1": "GOOD_TILL_CANCEL", "2": "AT_THE_OPENING", "3": "IMMEDIATE_OR_CANCEL",
         "4": "FILL_OR_KILL", "5": "GOOD_TILL_CROSSING", "6": "GOOD_TILL_DATE", "7": "AT_THE_CLOSE"},
    150: {"0": "NEW", "4": "CANCELED", "5": "REPLACED", "8": "REJECTED", "C": "EXPIRED",
          "F": "TRADE", "I": "ORDER_STATUS"},
    39: {"0": "NEW", "1": "PARTIALLY_FILLED", "2": "FILLED", "4": "CANCELED", "8": "REJECTED",
         "C": "EXPIRED"},
    103: {"1": "UNKNOWN_SYMBOL", "2": "EXCHANGE_CLOSED", "3": "ORDER_EXCEEDS_LIMIT",
          "5": "UNKNOWN_ORDER", "6": "DUPLICATE_ORDER", "11": "UNSUPPORTED_ORDER_CHARACTERISTIC",
          "13": "INCORRECT_QUANTITY", "15": "UNKNOWN_ACCOUNT", "99": "OTHER"},
    102: {"0": "TOO_LATE_TO_CANCEL", "1": "UNKNOWN_ORDER", "2": "BROKER_CREDIT",
          "6": "DUPLICATE_CL_ORD_ID", "99": "OTHER"},
    434: {"1": "ORDER_CANCEL_REQUEST", "2": "ORDER_CANCEL"},
    13: {"3": "ABSOLUTE"},
    380: {"0": "OTHER", "3": "UNSUPPORTED_MESSAGE_TYPE", "4": "APPLICATION_NOT_AVAILABLE",
          "5": "CONDITIONALLY_REQUIRED_FIELD_MISSING"},
    373: {"0": "INVALID_TAG_NUMBER", "1": "REQUIRED_TAG_MISSING",
          "2": "TAG_NOT_DEFINED_FOR_THIS_MESSAGE_TYPE", "3": "UNDEFINED_TAG",
          "4": "TAG_SPECIFIED_WITHOUT_A_VALUE", "5": "VALUE_IS_INCORRECT",
          "6": "INCORRECT_DATA_FORMAT_FOR_VALUE", "9": "COMP_ID_PROBLEM",
          "10": "SENDING_TIME_ACCURACY_PROBLEM", "11": "INVALID_MSG_TYPE",
          "13": "TAG_APPEARS_MORE_THAN_ONCE", "14": "TAG_SPECIFIED_OUT_OF_REQUIRED_ORDER",
          "16": "INCORRECT_NUM_IN_GROUP_COUNT_FOR_REPEATING_GROUP", "99": "OTHER"},
    263: {"0": "SNAPSHOT", "1": "SNAPSHOT_AND_UPDATES", "2": "DISABLE_PREVIOUS_SNAPSHOT"},
    340: {"1": "HALTED", "2": "OPEN", "3": "CLOSED", "6": "REQUEST_REJECTED"},
    567: {"1": "UNKNOWN_OR_INVALID_TRADING_SESSION_ID"},
    265: {"0": "FULL_REFRESH", "1": "INCREMENTAL_REFRESH"},
    269: {"0": "BID", "1": "OFFER", "2": "TRADE"},
    279: {"0": "NEW", "1": "CHANGE", "2": "DELETE"},
    281: {"0": "UNKNOWN_SYMBOL", "1": "DUPLICATE_MD_REQ_ID",
          "4": "UNSUPPORTED_SUBSCRIPTION_REQUEST_TYPE", "5": "UNSUPPORTED_MARKET_DEPTH",
          "6": "UNSUPPORTED_MD_UPDATE_TYPE", "7": "UNSUPPORTED_AGGREGATED_BOOK",
          "8": "UNSUPPORTED_MD_ENTRY_TYPE"},
    559: {"0": "SYMBOL", "4": "ALL_SECURITIES"},
    560: {"0": "VALID_REQUEST", "1": "INVALID_OR_UNSUPPORTED_REQUEST", "2": "NO_INSTRUMENTS_FOUND"},
    871: {"99": "TEXT"},
    233: {"PRICE": "PRICE_RANGE", "PROD": "PRODUCTION_YEAR"},
    460: {"2": "COMMODITY"},
    530: {"1": "CANCEL_ORDERS_FOR_A_SECURITY", "2": "CANCEL_ORDERS_FOR_AN_UNDERLYING_SECURITY",
          "3": "CANCEL_ORDERS_FOR_A_PRODUCT", "4": "CANCEL_ORDERS_FOR_ACFI_CODE",
          "5": "CANCEL_ORDERS_FOR_A_SECURITY_TYPE", "6": "CANCEL_ORDERS_FOR_A_TRADING_SESSION",
          "7": "CANCEL_ALL_ORDERS"},
    531: {"0": "CANCEL_REQUEST_REJECTED", "1": "CANCEL_ORDERS_FOR_A_SECURITY",
          "7": "CANCEL_ALL_ORDERS"},
    532: {"0": "MASS_CANCEL_NOT_SUPPORTED", "1": "INVALID_OR_UNKNOWN_SECURITY", "99": "OTHER"},
}


class SubsetError(ValueError):
    """A table above names something FIX 4.4 (as fix44_spec.py holds it) does not have."""


def _subset(items: list, wanted: Layout, where: str) -> list:
    """The spec layout `items` cut down to `wanted`, in the spec's order, required flags kept.
    Items are (tag, required) or (count_tag, required, [items]), as in fix44_spec."""
    members = {w if isinstance(w, int) else w[0]: (None if isinstance(w, int) else w[1])
               for w in wanted}
    by_tag = {it[0]: it for it in items}
    for plain, encoded in ENCODED_FIELDS.items():   # non-ASCII Text goes out encoded as well
        if plain in members:
            members.update((tag, None) for tag in encoded if tag in by_tag)
    for tag, sub in members.items():
        it = by_tag.get(tag)
        if it is None:
            raise SubsetError(f"{where}: FIX 4.4 has no field {tag} here")
        if (sub is None) != (len(it) == 2):
            raise SubsetError(f"{where}: field {tag} is " + (
                "not a repeating group in FIX 4.4" if len(it) == 2
                else "a repeating group in FIX 4.4: list its members"))
    out = []
    for it in items:
        if it[0] not in members:
            if it[1]:
                raise SubsetError(f"{where}: FIX 4.4 requires field {it[0]}; keep it")
            continue
        if len(it) == 3:
            out.append((it[0], it[1], _subset(it[2], members[it[0]], f"{where}/{it[0]}")))
        else:
            out.append(it)
    return out


def layouts() -> dict[str, list]:
    """msg type -> its layout in the broker kit (fix44_spec item format)."""
    return {t: _subset(spec.MESSAGES[t], wanted, f"MsgType {t}")
            for t, (_, wanted) in MESSAGES.items()}


def _tags(items: list, out: set) -> set:
    for it in items:
        out.add(it[0])
        if len(it) == 3:
            _tags(it[2], out)
    return out


def enum_values(tag: int) -> tuple[tuple[str, str], ...]:
    """(value, QuickFIX name) of an enumerated field in the kit, () for a free field."""
    fix44 = spec.ENUMS.get(tag, ()) if tag != 35 else tuple(spec.MSG_TYPES)
    if tag not in ENUM_VALUES:
        if fix44:
            raise SubsetError(f"field {tag} is enumerated in FIX 4.4: list it in ENUM_VALUES")
        return ()
    values = ENUM_VALUES[tag]
    if tag == 35:
        return tuple((v, spec.MSG_TYPES[v][0].upper()) for v in values)
    if values is None:
        values = fix44
    names = NAMES.get(tag, {})
    for value in values:
        if value not in fix44:
            raise SubsetError(f"field {tag}: {value!r} is not a FIX 4.4 value")
        if value not in names:
            raise SubsetError(f"field {tag}: no QuickFIX name for {value!r} in NAMES")
    return tuple((v, names[v]) for v in values)


def _name(tag: int) -> str:
    return spec.FIELDS[tag][0]


def _items_xml(items: list, indent: str, lines: list[str]) -> None:
    for it in items:
        required = "Y" if it[1] else "N"
        if len(it) == 3:
            lines.append(f'{indent}<group name="{_name(it[0])}" required="{required}">')
            _items_xml(it[2], indent + "  ", lines)
            lines.append(f"{indent}</group>")
        else:
            lines.append(f'{indent}<field name="{_name(it[0])}" required="{required}"/>')


def broker_dictionary_xml() -> str:
    """The whole XML document, deterministic (the committed file must equal it)."""
    messages = layouts()
    used = _tags(spec.HEADER, set()) | _tags(spec.TRAILER, set())
    for items in messages.values():
        _tags(items, used)
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        "<!-- The FIX 4.4 subset spoken by the CCERX gateway (`ccerx serve`), for a broker's",
        "     QuickFIX-family engine (DataDictionary=FIX44-CCERX.xml). Generated by",
        "     python -m ccerx.gateway.fix.gen_broker_dictionary; do not edit.",
        "     Standard FIX 4.4 tags and values, no custom fields, and one extension from FIX 5.0",
        "     SP1: the take order (OrdType 40=Q, Counter-order selection; RefOrderID 1080 names",
        "     the listing's OrderID). Prices are decimal CNY strings on the instrument's tick,",
        "     quantities whole tonnes. -->",
        '<fix type="FIX" major="4" minor="4" servicepack="0">',
        "  <header>",
    ]
    _items_xml(spec.HEADER, "    ", lines)
    lines += ["  </header>", "  <messages>"]
    for msg_type, items in messages.items():
        name, category = spec.MSG_TYPES[msg_type]
        lines.append(f"    <!-- {SENDER[MESSAGES[msg_type][0]]} -->")
        lines.append(f'    <message name="{name}" msgtype="{msg_type}" msgcat="{category}">')
        _items_xml(items, "      ", lines)
        lines.append("    </message>")
    lines += ["  </messages>", "  <trailer>"]
    _items_xml(spec.TRAILER, "    ", lines)
    lines += ["  </trailer>", "  <components>", "  </components>", "  <fields>"]
    for tag in sorted(used):
        name, ftype = spec.FIELDS[tag]
        values = enum_values(tag)
        head = f'    <field number="{tag}" name="{name}" type="{ftype}"'
        if not values:
            lines.append(head + "/>")
            continue
        lines.append(head + ">")
        for value, description in values:
            lines.append(f"      <value enum={quoteattr(value)} description={quoteattr(description)}/>")
        lines.append("    </field>")
    lines += ["  </fields>", "</fix>", ""]
    return "\n".join(lines)


def main() -> None:
    sys.stdout.write(broker_dictionary_xml())


if __name__ == "__main__":
    main()
