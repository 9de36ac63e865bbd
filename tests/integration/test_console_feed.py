"""The console without a browser: it shows only durable events (published at the durable
engine's commit, never before), a failing console does not stop the engine, and `ccerx serve`
refuses a console it cannot serve safely before starting anything."""
from __future__ import annotations

import pytest

from ccerx.engine.core.commands import NewOrder
from ccerx.engine.core.risk import Account, Accounts
from ccerx.engine.durable.exchange import DurableExchange
from ccerx.gateway.config import ConfigError, hash_password
from ccerx.gateway.console.auth import Sessions, load_operators
from ccerx.gateway.console.feed import ConsoleState, observe
from ccerx.scripts.ccerx import main

S = 1_000_000_000
T0 = 1_772_415_000 * S


def order(order_id, account, side, price):
    return NewOrder(order_id, account, "CCER-AFF", side, "limit", "day", price * 10_000, 10, T0)


@pytest.fixture
def engine(tmp_path):
    accounts = Accounts([Account("BUY", cash=10_000_000), Account("SELL", credits={"CCER-AFF": 100})])
    engine = DurableExchange(tmp_path / "data", accounts=accounts, ledger=None, log=lambda t: None)
    yield engine
    engine.close()


def test_events_reach_the_console_only_once_durable(engine):
    published: list = []
    observe(engine, published.extend)
    engine.apply_deferred(order("s1", "SELL", "sell", 6200))
    engine.apply_deferred(order("b1", "BUY", "buy", 6200))
    assert published == []                     # applied, not yet durable: not shown
    engine.commit()
    assert [type(e).__name__ for e in published] == ["OrderAccepted", "OrderAccepted",
                                                     "TradeExecuted"]
    engine.apply(order("s2", "SELL", "sell", 6300))    # durable on return: shown at once
    assert len(published) == 4


def test_a_failing_console_does_not_stop_the_engine(engine):
    def broken(events):
        raise RuntimeError("console bug")
    observe(engine, broken)
    engine.apply_deferred(order("s1", "SELL", "sell", 6200))
    engine.commit()
    assert engine.apply(order("b1", "BUY", "buy", 6200))[-1].price == 6200


def test_console_state_tape_last_price_and_live_alerts(engine):
    state = ConsoleState(engine)
    observe(engine, state.publish)
    engine.apply(order("s1", "SELL", "sell", 6200))
    engine.apply(order("b1", "BUY", "buy", 6200))
    market = state.market()["instruments"]["CCER-AFF"]
    assert (market["last"], market["vwap"], market["volume"]) == ("62.00", "62.00", 10)
    assert [t["price"] for t in state.tape] == ["62.00"]
    assert state.book("CCER-AFF", 5) == {"symbol": "CCER-AFF", "name": "afforestation carbon sink",
                                         "bids": [], "asks": []}


def test_operators_file_and_password_check(tmp_path):
    path = tmp_path / "ops.toml"
    path.write_text(f'[[operator]]\nname = "wang"\ndisplay = "王芳"\npassword = "{hash_password("s3cret")}"\n',
                    encoding="utf-8")
    sessions = Sessions(load_operators(path))
    assert sessions.check_password("wang", "s3cret").display == "王芳"
    assert sessions.check_password("wang", "wrong") is None
    assert sessions.check_password("nobody", "s3cret") is None
    token = sessions.open(sessions.operators["wang"])
    assert sessions.get(token).operator.name == "wang" and sessions.get("forged") is None
    sessions.close(token)
    assert sessions.get(token) is None
    path.write_text('[[operator]]\nname = "wang"\npassword = "plain-text-secret"\n')
    with pytest.raises(ConfigError) as err:
        load_operators(path)
    assert "plain-text-secret" not in str(err.value) and "hash" in str(err.value)


@pytest.mark.parametrize("args, words", [
    (["--console", "0.0.0.0:8080", "--console-operators", "OPS"], "refusing to serve the console"),
    (["--console", "127.0.0.1:8080"], "needs --console-operators"),
    (["--console", "8080", "--console-operators", "OPS"], "give HOST:PORT"),
    (["--console", "127.0.0.1:8080", "--console-operators", "MISSING"], "cannot read"),
])
def test_serve_refuses_a_console_it_cannot_serve_safely(tmp_path, capsys, args, words):
    ops = tmp_path / "ops.toml"
    ops.write_text(f'[[operator]]\nname = "wang"\npassword = "{hash_password("s3cret")}"\n')
    args = [str(ops) if a == "OPS" else str(tmp_path / "missing.toml") if a == "MISSING" else a
            for a in args]
    data = tmp_path / "data"
    assert main(["serve", "--port", "0", "--data-dir", str(data), *args]) == 2
    assert words in capsys.readouterr().err
    assert not data.exists()                   # refused before anything started
