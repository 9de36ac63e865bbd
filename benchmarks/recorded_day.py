"""The recorded day: the state a data directory's journal starts from.

Theory of operation. A durable data directory (`ccerx serve`, `ccerx recover`, see
engine/durable.py) journals commands from command 1, but the journal alone is not the day:
the commands were applied to the directory's *genesis*, the exchange it was created with
(instruments, accounts with their types, members and balances, the fee rate). Replayed from
any other start, the same commands give other fills and rejects and another end state, and
nothing in a benchmark that only compares its own passes with each other would notice. So a
journal is replayed from the directory's own genesis:

1. `snapshot-0000000000000000.snap`, which DurableExchange writes at creation and never
   deletes: the full exchange state, restored and checked against its recorded state hash;
2. if that is missing or unreadable, `opening.json`: it holds the genesis state hash but only
   the opening balances (no participant types, members, fee rate or instruments), so a start
   is rebuilt from the balances (or taken from the caller's accounts and instruments) and
   accepted only if its state hash equals the recorded one;
3. a directory with neither has nothing to check against: the caller's start (or the
   default instruments without accounts) is used and the result says it was unchecked.

A start the caller gives (`ccerx bench --accounts/--instruments`) that differs from the
genesis is refused with what differs, never silently replayed.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Optional

import orjson

from ccerx.engine.durable import snapshot as snap
from ccerx.engine.durable.exchange import OPENING
from ccerx.engine.core.exchange import Exchange
from ccerx.engine.core.risk import Account, Accounts
from ccerx.engine.core.types import DEFAULT_INSTRUMENTS

_MAX_DIFFERENCES = 6


class GenesisError(ValueError):
    """The directory's start state cannot be established (or the one given is not it)."""


@dataclass(frozen=True)
class Genesis:
    source: str           # where the start state came from, for the report
    state_hash: str
    checked: bool         # False: the directory holds nothing to check the start against
    state: bytes          # snapshot.exchange_state(), serialised: each exchange gets its own copy

    def new_exchange(self) -> Exchange:
        """A fresh exchange in the genesis state (shares nothing with earlier ones)."""
        return snap.exchange_from_state(orjson.loads(self.state))

    @classmethod
    def of(cls, exchange: Exchange, source: str, checked: bool) -> "Genesis":
        return cls(source, exchange.state_hash(), checked,
                   orjson.dumps(snap.exchange_state(exchange), option=orjson.OPT_NON_STR_KEYS))


def genesis(data_dir, given: Optional[Exchange] = None) -> Genesis:
    """The start state of `data_dir`'s journal. `given` (an exchange built from the caller's
    accounts and instruments, None if the caller gave none) must equal it, else GenesisError."""
    data_dir = Path(data_dir)
    path = snap.snapshot_path(data_dir, 0)
    unreadable = None
    if path.exists():
        try:
            seq, exchange, _ = snap.restore(path)
            if seq != 0:
                raise snap.SnapshotError(f"{path.name}: holds the state after command {seq}")
        except (snap.SnapshotError, ValueError, KeyError, TypeError) as err:
            unreadable = str(err)
        else:
            source = f"the directory's genesis snapshot {path.name}"
            if given is not None and given.state_hash() != exchange.state_hash():
                raise GenesisError(_mismatch(
                    data_dir, source, exchange.state_hash(), given, differences(exchange, given),
                    "omit --accounts and --instruments to start from the directory's genesis"))
            return Genesis.of(exchange, source, checked=True)
    missing = (f"its genesis snapshot {path.name} is "
               f"{f'unreadable ({unreadable})' if unreadable else 'missing'}")
    opening_path = data_dir / OPENING
    if not opening_path.exists():
        start = ("the --accounts/--instruments given" if given is not None
                 else "the default instruments and no accounts")
        return Genesis.of(given if given is not None else Exchange(),
                          f"UNCHECKED: {start} ({missing} and it has no {OPENING} to check "
                          f"a start against)", checked=False)
    try:
        opening = orjson.loads(opening_path.read_bytes())
        want, rows = opening["genesis_hash"], opening["accounts"]
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as err:
        raise GenesisError(f"{data_dir}: {missing} and {OPENING} cannot be read ({err})") from None
    if given is not None:
        source = (f"the --accounts/--instruments given, equal to the genesis in {OPENING} "
                  f"({missing})")
        if given.state_hash() != want:
            raise GenesisError(_mismatch(
                data_dir, f"the genesis recorded in {OPENING} ({missing})", want, given,
                _balance_differences(rows, given.accounts) or [
                    "the balances agree, so participant types, members, the fee rate or "
                    "instruments differ"],
                "pass the accounts and instruments the directory was created with"))
        return Genesis.of(given, source, checked=True)
    rebuilt = Exchange(DEFAULT_INSTRUMENTS, Accounts(
        Account(name, cash=cash, credits=dict(credits)) for name, cash, credits in rows)
        if rows else None)
    if rebuilt.state_hash() != want:
        raise GenesisError(
            f"{data_dir}: {missing}, and {OPENING} holds only the opening balances (not "
            f"participant types, members, the fee rate or instruments): rebuilt from them, the "
            f"start does not match the directory's genesis (state hash {rebuilt.state_hash()} "
            f"vs {want}). "
            f"Pass --accounts (and --instruments) as the directory was created with; they are "
            f"checked against that hash.")
    return Genesis.of(rebuilt, f"the opening balances in {OPENING}, equal to the genesis "
                               f"({missing})", checked=True)


def _mismatch(data_dir, source, want_hash, given, found, advice) -> str:
    return (f"{data_dir}: the journal was recorded from {source} (state hash "
            f"{want_hash}); --accounts/--instruments give another start (state hash "
            f"{given.state_hash()}): {'; '.join(found)}. Replayed from it the journal would not "
            f"reproduce the recorded day: {advice}.")


def differences(want: Exchange, got: Exchange) -> list[str]:
    """What differs between two start states, in words (at most a few items)."""
    found = []
    for symbol in sorted(want.specs.keys() | got.specs.keys()):
        a, b = want.specs.get(symbol), got.specs.get(symbol)
        if a is None or b is None:
            found.append(_only_one(f"instrument {symbol}", given=b is not None))
        elif a != b:
            a_json, b_json = a.to_json(), b.to_json()
            found += [f"instrument {symbol}: {key} {b_json[key]!r} given, {a_json[key]!r} in "
                      f"the directory" for key in a_json if a_json[key] != b_json[key]]
    if want.fee_ppm != got.fee_ppm:
        found.append(f"fee rate {_rate(got.fee_ppm)} given, {_rate(want.fee_ppm)} in the "
                     f"directory")
    if (want.accounts is None) != (got.accounts is None):
        found.append("accounts given, none in the directory" if want.accounts is None else
                     f"no accounts given, {len(want.accounts.by_id):,} in the directory")
    elif want.accounts is not None:
        for name in sorted(want.accounts.by_id.keys() | got.accounts.by_id.keys()):
            a, b = want.accounts.get(name), got.accounts.get(name)
            if a is None or b is None:
                found.append(_only_one(f"account {name}", given=b is not None))
                continue
            a_json, b_json = a.to_json(), b.to_json()
            for key in a_json:
                if a_json[key] != b_json[key]:
                    found.append(f"account {name}: {key} {b_json[key]!r} given, "
                                 f"{a_json[key]!r} in the directory")
    if not found and want.state_hash() != got.state_hash():
        found.append("the state differs beyond instruments, fee rate and accounts")
    return _cap(found)


def _only_one(what: str, given: bool) -> str:
    return f"{what} given, not in the directory" if given else f"{what} in the directory, not given"


def _rate(ppm: int) -> str:
    return str(Decimal(ppm).scaleb(-6).normalize())


def _balance_differences(rows: list, accounts: Optional[Accounts]) -> list[str]:
    want = {name: (cash, dict(credits)) for name, cash, credits in rows}
    got = {} if accounts is None else {
        a.account: (a.cash, dict(a.credits)) for a in accounts.by_id.values()}
    found = []
    for name in sorted(want.keys() | got.keys()):
        if name not in got or name not in want:
            found.append(_only_one(f"account {name}", given=name in got))
        elif want[name] != got[name]:
            found.append(f"account {name}: opening balances differ")
    return _cap(found)


def _cap(found: list[str]) -> list[str]:
    if len(found) > _MAX_DIFFERENCES:
        found = found[:_MAX_DIFFERENCES] + [f"and {len(found) - _MAX_DIFFERENCES:,} more"]
    return found
