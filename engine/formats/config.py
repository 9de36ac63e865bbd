"""Loading instrument and account tables from files (TOML or JSON)."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

from ccerx.engine.core.risk import Accounts
from ccerx.engine.core.types import DEFAULT_INSTRUMENTS, InstrumentSpec


def _load(path: str | Path) -> dict:
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
    data = _load(path)
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


def load_accounts(path: str | Path) -> Accounts:
    try:
        return Accounts.from_json(_load(path))
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
