"""DurableExchange.apply_deferred/commit (the gateway's group commit) against apply()."""
from __future__ import annotations

import random

from ccerx.engine.core.commands import NewOrder
from ccerx.engine.formats.config import load_instruments
from ccerx.engine.durable.exchange import DurableExchange
from ccerx.engine.core.types import price_field
from ccerx.gateway.config import GatewayConfig


def _orders(n: int, seed: int = 3) -> list:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        side = rnd.choice(("buy", "sell"))
        account = ("EMIT" if side == "buy" else "HOLD") + rnd.choice(("01", "02"))
        price = 6200 + rnd.randint(-5, 5)
        out.append(NewOrder(f"o{i}", account, "CCER-AFF", side, "limit", None,
                            price_field(f"{price // 100}.{price % 100:02d}"),
                            rnd.randint(1, 20), 1_700_000_000_000_000_000 + i,
                            "BROKER" + account[-2:]))
    return out


def _open(path):
    return DurableExchange(path, load_instruments(None), GatewayConfig.demo().build_accounts(),
                           ledger=None)


def test_deferred_commands_are_journaled_in_order_and_recovered(tmp_path):
    commands = _orders(303)
    plain = _open(tmp_path / "plain")
    expected = [plain.apply(c) for c in commands]
    plain_hash = plain.state_hash()
    plain.close()

    deferred = _open(tmp_path / "deferred")
    got = []
    for i, command in enumerate(commands):
        if i % 50 == 49:
            got.append(deferred.apply(command))        # commits the held ones first
        else:
            got.append(deferred.apply_deferred(command))
        if i % 7 == 6:
            deferred.commit()
    assert deferred._deferred                           # the last few are still held
    deferred.commit()
    assert not deferred._deferred and not deferred._held_rows
    assert got == expected
    assert deferred.state_hash() == plain_hash
    assert deferred.outbox.last_seq == sum(type(e).__name__ == "TradeExecuted"
                                           for events in expected for e in events) > 0
    deferred.close()

    reopened = _open(tmp_path / "deferred")
    assert reopened.state_hash() == plain_hash
    assert reopened.recovery.last_seq == len(commands)
    reopened.close()


def test_close_commits_what_is_held(tmp_path):
    commands = _orders(40, seed=5)
    engine = _open(tmp_path / "d")
    for command in commands:
        engine.apply_deferred(command)
    state = engine.state_hash()
    engine.close()
    reopened = _open(tmp_path / "d")
    assert reopened.state_hash() == state and reopened.recovery.last_seq == len(commands)
    reopened.close()
