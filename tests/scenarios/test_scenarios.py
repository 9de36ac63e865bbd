"""Runs the book scenarios written as data in the `book_*.txt` files of this directory.

A file holds cases; a case starts with `## title` and is a list of lines:
    accounts: {...}   optional accounts table (as an --accounts file): pre-trade checks on
    rules: NAME       optional rule profile (engine/core/rules.py); default continuous
    xfail: why        optional: a known engine bug, run as a strict xfail
    > {...}           a command, exactly an NDJSON input line of `ccerx replay`
    < {...}           an expected event of the previous command (events-out format); only the
                      keys given are compared, but if a command has any `<` line it must
                      have one per event, in order
    = {...}           expected resting book (book-out format) for the instruments given
    $ {...}           expected state of one account (its `to_json()` form; keys given only)
    # ...             comment
Commands run through the same parser and engine as `ccerx replay`, with the default
instruments; a `> {"op":"instrument",...}` line overrides one. A new case is a new block.
"""
from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from ccerx.engine.core.exchange import Exchange
from ccerx.engine.core.rules import profile
from ccerx.engine.formats.ndjson import books_to_json, event_to_dict, parse_command
from ccerx.engine.formats.config import accounts_from_json
from ccerx.engine.core.types import DEFAULT_INSTRUMENTS

HERE = Path(__file__).parent


class Case:
    def __init__(self, source: str, title: str):
        self.source, self.title = source, title
        self.accounts = None
        self.rules = "continuous"
        self.xfail = None
        self.steps: list[tuple[str, int, object]] = []  # (kind, line number, payload)


def load_cases() -> list[Case]:
    cases: list[Case] = []
    for path in sorted(HERE.glob("book_*.txt")):
        case = None
        for number, raw in enumerate(path.read_text().splitlines(), 1):
            line = raw.strip()
            where = f"{path.name}:{number}"
            if not line or line.startswith("# "):
                continue
            if line.startswith("## "):
                case = Case(where, line[3:].strip())
                cases.append(case)
                continue
            if case is None:
                raise ValueError(f"{where}: line outside a case")
            if line.startswith("accounts:"):
                case.accounts = orjson.loads(line.split(":", 1)[1])
            elif line.startswith("rules:"):
                case.rules = line.split(":", 1)[1].strip()
            elif line.startswith("xfail:"):
                case.xfail = line.split(":", 1)[1].strip()
            elif line[:2] in ("> ", "< ", "= ", "$ "):
                payload = line[2:] if line[0] == ">" else orjson.loads(line[2:])
                case.steps.append((line[0], number, payload))
            else:
                raise ValueError(f"{where}: cannot read {line!r}")
    return cases


def run_case(case: Case) -> None:
    accounts = accounts_from_json(case.accounts) if case.accounts else None
    exchange = Exchange(DEFAULT_INSTRUMENTS, accounts, rules=profile(case.rules))
    pending: list[dict] = []   # events of the last command not yet matched by `<` lines
    expected_any = False
    last_cmd = ""

    def close_command():
        if expected_any and pending:
            raise AssertionError(f"{case.source} {case.title!r}: command {last_cmd} produced "
                                 f"unexpected further events: {pending}")

    for kind, number, payload in case.steps:
        where = f"{case.source.split(':')[0]}:{number} ({case.title})"
        if kind == ">":
            close_command()
            last_cmd = payload
            events = exchange.apply(parse_command(payload.encode()))
            exchange.check()
            pending = [event_to_dict(e, exchange.specs) for e in events]
            expected_any = False
            continue
        if kind == "<":
            expected_any = True
            assert pending, f"{where}: expected {payload} but the command has no more events"
            got = pending.pop(0)
            mismatch = {k: (v, got.get(k, "<missing>")) for k, v in payload.items() if got.get(k, "<missing>") != v}
            assert not mismatch, f"{where}: event {got} differs (expected, got): {mismatch}"
            continue
        close_command()
        expected_any = False
        pending = []
        if kind == "=":
            books = books_to_json(exchange)
            for symbol, want in payload.items():
                assert books[symbol] == want, f"{where}: book {symbol} is {books[symbol]}, expected {want}"
        elif kind == "$":
            account = exchange.accounts.get(payload["account"])
            state = account.to_json()
            mismatch = {k: (v, state.get(k)) for k, v in payload.items() if state.get(k) != v}
            assert not mismatch, f"{where}: account {state} differs (expected, got): {mismatch}"
    close_command()


CASES = load_cases()


@pytest.mark.parametrize("case", [
    pytest.param(c, id=c.title, marks=[pytest.mark.xfail(strict=True, reason=c.xfail)] if c.xfail else [])
    for c in CASES])
def test_scenario(case):
    run_case(case)


def test_scenario_files_are_not_empty():
    assert len(CASES) >= 30
    titles = [c.title for c in CASES]
    assert len(set(titles)) == len(titles), "scenario titles must be unique"
    for c in CASES:
        assert any(kind in "<=$" for kind, _, _ in c.steps), f"{c.source}: case checks nothing"
