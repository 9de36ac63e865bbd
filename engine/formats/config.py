"""Loading instrument and account tables from files (TOML or JSON), and the one account schema.

`account_from_row` is the only parser of an account row: the accounts file (`--accounts`),
the gateway config's `[[broker.account]]` tables and anything else that opens accounts use
it, so they accept and refuse the same things (cash only as a decimal string, never a float).
"""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

from ccerx.engine.core.risk import DEFAULT_FEE_PPM, PPM, Account, Accounts
from ccerx.engine.core.types import (DEFAULT_INSTRUMENTS, InstrumentSpec, ParticipantType,
                                     parse_cny_to_fen, parse_decimal_units)

ACCOUNT_ID_MAX = 64
ACCOUNT_KEYS = {"account", "type", "member", "cash", "credits"}


def load_table(path: str | Path) -> dict:
    """A TOML (.toml) or JSON file as a dict; ValueError naming the path if unreadable."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err.strerror}") from None
    try:
        if path.suffix == ".toml":
            return tomllib.loads(raw.decode())
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'JSON'}: {err}") from None


def load_instruments(path: str | Path | None) -> list[InstrumentSpec]:
    """Default CCER set, with entries of the file (`[[instrument]]` tables or an
    {"instruments": [...]} list) overriding or adding by symbol."""
    specs = {spec.symbol: spec for spec in DEFAULT_INSTRUMENTS}
    if path is None:
        return list(specs.values())
    data = load_table(path)
    rows = data.get("instrument", data.get("instruments"))
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected an 'instrument' array of tables")
    for row in rows:
        if not isinstance(row, dict) or "symbol" not in row:
            raise ValueError(f"{path}: every instrument needs a symbol")
        base = specs.get(row["symbol"])
        fields = base.to_json() if base else {}
        fields.pop("op", None)
        for key, value in row.items():
            fields[key] = value if not isinstance(value, float) else _reject_float(path, key)
        try:
            specs[row["symbol"]] = InstrumentSpec.from_fields(**fields)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: instrument {row['symbol']}: {err}") from None
    return list(specs.values())


def _reject_float(path, key):
    raise ValueError(f"{path}: {key} must be a decimal string (e.g. \"62.00\"), not a float")


def account_from_row(row, member: str | None = None, allow_member: bool = True) -> Account:
    """One account row -> Account. Keys: `account` (1-64 characters), `type` (a participant
    type, default other_organisation), `member` (the broker; not in a gateway config, where
    the broker table gives it), `cash` (decimal CNY as a string, e.g. "1000.00"; a float or an
    integer is refused: 100.1 is not exactly 100.10), `credits` (credit type -> whole tonnes).
    Raises ValueError naming the account and the field."""
    if not isinstance(row, dict) or not isinstance(row.get("account"), str) or not row["account"]:
        raise ValueError("every account needs an account id (a non-empty string)")
    name = row["account"]
    if len(name) > ACCOUNT_ID_MAX:
        raise ValueError(f"account id {name[:20]!r}... is longer than {ACCOUNT_ID_MAX} characters")
    allowed = ACCOUNT_KEYS if allow_member else ACCOUNT_KEYS - {"member"}
    unknown = set(row) - allowed
    if unknown:
        raise ValueError(f"account {name}: unknown key(s) {sorted(unknown)}")
    try:
        ptype = ParticipantType(row.get("type", "other_organisation"))
    except ValueError:
        raise ValueError(f"account {name}: unknown type {row.get('type')!r}; expected one of "
                         f"{[t.value for t in ParticipantType]}") from None
    cash = row.get("cash", "0")
    if not isinstance(cash, str):
        raise ValueError(f"account {name}: cash must be a decimal string, e.g. \"1000.00\" "
                         f"(got {type(cash).__name__} {cash!r})")
    try:
        cash_fen = parse_cny_to_fen(cash)
    except ValueError as err:
        raise ValueError(f"account {name}: cash: {err}") from None
    if cash_fen < 0:
        raise ValueError(f"account {name}: negative cash")
    credits = row.get("credits", {})
    if not isinstance(credits, dict) or any(type(v) is not int or v < 0 for v in credits.values()):
        raise ValueError(f"account {name}: credits must map credit type -> whole tonnes")
    owner = row.get("member", member) if allow_member else member
    if owner is not None and not isinstance(owner, str):
        raise ValueError(f"account {name}: member must be a broker CompID string")
    return Account(name, ptype, owner, cash_fen, credits=dict(sorted(credits.items())))


def accounts_from_json(data) -> Accounts:
    """{"fee_rate": "0.006", "accounts": [{"account": "EMIT01", "type": "key_emission_unit",
    "member": "BROKER01", "cash": "100000000.00", "credits": {"CCER-AFF": 1000}}]}"""
    if not isinstance(data, dict) or not isinstance(data.get("accounts"), list):
        raise ValueError("accounts file must be an object with an 'accounts' list")
    fee_ppm = DEFAULT_FEE_PPM
    if "fee_rate" in data:
        if not isinstance(data["fee_rate"], str):
            raise ValueError("fee_rate must be a decimal string, e.g. \"0.006\"")
        fee_ppm = parse_decimal_units(data["fee_rate"], PPM)
        if not 0 <= fee_ppm < PPM:
            raise ValueError("fee_rate must be in [0, 1)")
    table = Accounts(fee_ppm=fee_ppm)
    for row in data["accounts"]:
        account = account_from_row(row)
        if table.get(account.account) is not None:
            raise ValueError(f"duplicate account {account.account!r}")
        table.add(account)
    return table


def load_accounts(path: str | Path) -> Accounts:
    data = load_table(path)            # its errors name the path already
    try:
        return accounts_from_json(data)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
