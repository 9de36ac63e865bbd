"""The rule profile is part of the exchange's state: a snapshot and a journal replay bring back
the profile and the Art.29 holding state exactly; `continuous` hashes as before profiles."""
from __future__ import annotations

from ccerx.engine.core.commands import EndOfDay
from ccerx.engine.core.events import OrderAccepted, OrderRejected
from ccerx.engine.core.exchange import Exchange
from ccerx.engine.core.risk import Account, Accounts
from ccerx.engine.core.rules import CBEEX_2023, CONTINUOUS, PROFILES, RuleProfile
from ccerx.engine.core.types import DEFAULT_INSTRUMENTS, RejectReason
from ccerx.engine.durable import snapshot as snap
from ccerx.engine.durable.exchange import DurableExchange
from ccerx.engine.formats.ndjson import parse_command


def accounts() -> Accounts:
    return Accounts([Account("A", cash=10 ** 9), Account("B", credits={"CCER-AFF": 1000}),
                     Account("C", cash=10 ** 9, credits={"CCER-AFF": 1000})])


def line(text: str):
    return parse_command(text.encode())


DAY = [
    '{"op":"new","order_id":"s1","account":"B","instrument":"CCER-AFF","side":"sell","price":"62.00","qty":50}',
    '{"op":"new","order_id":"t1","account":"A","instrument":"CCER-AFF","side":"buy","type":"take","qty":20}',
    '{"op":"new","order_id":"c1","account":"C","instrument":"CCER-AFF","side":"buy","price":"61.00","qty":5}',
]


def test_profiles_round_trip_through_json():
    for profile in PROFILES.values():
        assert RuleProfile.from_json(profile.to_json()) == profile
    assert CBEEX_2023.with_max_qty(500).max_qty == 500


def test_a_snapshot_restores_the_profile_and_the_holding_state(tmp_path):
    ex = Exchange(DEFAULT_INSTRUMENTS, accounts(), rules=CBEEX_2023)
    for text in DAY:
        ex.apply(line(text))
    ex.apply(EndOfDay())
    ex.apply(line(DAY[2].replace('"c1"', '"c2"')))         # C's buy rests again
    path = snap.write(tmp_path, ex.seq, ex, {})
    _, restored, _ = snap.restore(path)
    assert restored.rules == CBEEX_2023
    assert restored.state_hash() == ex.state_hash()
    restored.check()
    assert restored.accounts.get("A").last_bought == {"CCER-AFF": 0}
    assert restored.accounts.closes == 1
    for exchange in (ex, restored):
        [sell] = exchange.apply(line('{"op":"new","order_id":"a1","account":"A","instrument":'
                                     '"CCER-AFF","side":"sell","price":"62.00","qty":5}'))
        assert sell.reason is RejectReason.HOLDING_PERIOD and "4 more closes" in sell.text
        [other] = exchange.apply(line('{"op":"new","order_id":"c3","account":"C","instrument":'
                                      '"CCER-AFF","side":"sell","price":"63.00","qty":5}'))
        assert other.reason is RejectReason.HOLDING_PERIOD and "(c2)" in other.text


def test_continuous_state_hash_does_not_depend_on_profiles_existing():
    # the hash of the default exchange after a little trading, as computed before rule
    # profiles existed (commit 4a4e4e3): the continuous replay contract
    ex = Exchange(DEFAULT_INSTRUMENTS, accounts())
    for text in DAY[:1] + [DAY[1].replace('"type":"take"', '"price":"62.00"'), DAY[2]]:
        ex.apply(line(text))
    assert ex.state_hash() == "8603808473d6e468e7f0b836a801454d"
    assert Exchange(DEFAULT_INSTRUMENTS, accounts(), rules=CONTINUOUS).state_hash() == \
        Exchange(DEFAULT_INSTRUMENTS, accounts()).state_hash()
    assert Exchange(DEFAULT_INSTRUMENTS, accounts(), rules=CBEEX_2023).state_hash() != \
        Exchange(DEFAULT_INSTRUMENTS, accounts()).state_hash()


def test_a_data_directory_replays_under_its_genesis_rules(tmp_path):
    durable = DurableExchange(tmp_path / "d", DEFAULT_INSTRUMENTS, accounts(), ledger=None,
                              fsync=False, rules=CBEEX_2023)
    for text in DAY:
        durable.apply(line(text))
    want = durable.state_hash()
    durable.close()
    # reopened without saying which rules: the directory's own win
    again = DurableExchange(tmp_path / "d", DEFAULT_INSTRUMENTS, accounts(), ledger=None,
                            fsync=False)
    try:
        assert again.rules == CBEEX_2023 and again.state_hash() == want
        [refused] = again.apply(line('{"op":"new","order_id":"i1","account":"C","instrument":'
                                     '"CCER-AFF","side":"buy","price":"62.00","tif":"ioc",'
                                     '"qty":1}'))
        assert type(refused) is OrderRejected and refused.reason is RejectReason.NOT_PERMITTED
        [accepted] = again.apply(line('{"op":"new","order_id":"c9","account":"C","instrument":'
                                      '"CCER-AFF","side":"buy","price":"61.00","qty":1}'))
        assert type(accepted) is OrderAccepted
    finally:
        again.close()
