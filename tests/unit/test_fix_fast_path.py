"""The FIX fast paths against the plain ones they stand in for (issue 13 item 4): the same
random order flow through an application with template ExecutionReports and one with field
lists gives the same messages and the same bytes on the wire; the one-pass field splitter
agrees with a field-by-field reading on good and bad frames."""
from __future__ import annotations

import itertools
import random

import pytest

from ccerx.engine.core.exchange import Exchange
from ccerx.engine.formats.config import load_instruments
from ccerx.gateway.config import GatewayConfig
from ccerx.gateway.fix import codec
from ccerx.gateway.fix.application import FixMessage, SessionKey
from ccerx.gateway.fix.session import Session
from ccerx.gateway.fix.store import MemoryStore
from ccerx.gateway.fix.translate import ExchangeApplication

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


def application(fast: bool) -> ExchangeApplication:
    config = GatewayConfig.demo()
    clock = itertools.count(T0, 1_000_000)
    app = ExchangeApplication(Exchange(load_instruments(None), config.build_accounts()),
                              config.comp_id, config.brokers, clock=lambda: next(clock))
    app.fast_reports = fast
    return app


def flow(seed: int, n: int):
    """Orders, cancels, replaces and status requests of two brokers: acks, partial and full
    fills at several prices (average prices that are no whole tick), fees, cancels, IOC
    expiries, rejects, status reports (with OrdStatusReqID)."""
    rnd = random.Random(seed)
    seq = itertools.count(1)
    live: list[tuple[str, str, str]] = []
    for i in range(n):
        broker = rnd.choice(("BROKER01", "BROKER02"))
        side = rnd.choice("12")
        account = ("EMIT" if side == "1" else "HOLD") + broker[-2:]
        roll = rnd.random()
        if roll < 0.12 and live:
            who, cl, sd = live.pop(rnd.randrange(len(live)))
            yield who, FixMessage.of("F", (34, next(seq)), (41, cl), (11, f"x{i}"),
                                     (55, "CCER-AFF"), (54, sd), (60, "20260101-00:00:00.000"))
            continue
        if roll < 0.2 and live:
            who, cl, sd = rnd.choice(live)
            yield who, FixMessage.of("G", (34, next(seq)), (41, cl), (11, f"r{i}"),
                                     (55, "CCER-AFF"), (54, sd), (60, "20260101-00:00:00.000"),
                                     (38, rnd.randint(1, 40)), (40, "2"),
                                     (44, f"{rnd.randint(6190, 6210) / 100:.2f}"))
            continue
        if roll < 0.25 and live:
            who, cl, sd = rnd.choice(live)
            yield who, FixMessage.of("H", (34, next(seq)), (11, cl), (55, "CCER-AFF"), (54, sd),
                                     (790, f"s{i}"))
            continue
        fields = [(34, next(seq)), (11, f"o{i}"), (1, account), (55, "CCER-AFF"), (54, side),
                  (60, "20260101-00:00:00.000"), (38, rnd.choice((rnd.randint(1, 40), "2.5"))),
                  (40, rnd.choice("22221"))]
        if fields[-1][1] == "2":
            fields.append((44, f"{rnd.randint(6190, 6210) / 100:.2f}"))
        if rnd.random() < 0.3:
            fields.append((59, rnd.choice("0334")))
        live.append((broker, f"o{i}", side))
        yield broker, FixMessage.of("D", *fields)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_template_reports_equal_field_list_reports_message_for_message(seed):
    fast, plain = application(True), application(False)
    sessions = {}
    templated = 0
    for broker, message in flow(seed, 600):
        key = SessionKey("FIX.4.4", "CCERX", broker)
        got, want = fast.on_message(key, message), plain.on_message(key, message)
        assert [k for k, _ in got] == [k for k, _ in want]
        for (k, a), (_, b) in zip(got, want):
            templated += getattr(a, "encoded_body", None) is not None
            pair = sessions.setdefault(k, (session_for(k), session_for(k)))
            for session, m in zip(pair, (a, b)):
                session.send(m, 1_767_225_600.0)      # the template's text, the field list
            assert pair[0].data_to_send() == pair[1].data_to_send()   # the same bytes
        assert [m.fields for _, m in got] == [m.fields for _, m in want]
    assert templated > 500


def session_for(key: SessionKey) -> Session:
    class Quiet:
        def on_logon(self, key):
            return []

        def on_logout(self, key):
            return []

        def on_message(self, key, message):
            return []
    session = Session(key, Quiet(), MemoryStore())
    session.connection_made(1_767_225_600.0)
    logon = codec.encode([(34, "1"), (49, key.their_comp_id), (52, codec.utc_timestamp(1_767_225_600.0)),
                          (56, key.our_comp_id)], [(98, "0"), (108, "30")], "A")
    session.receive_data(logon, 1_767_225_600.0)
    session.data_to_send()
    return session


def field_by_field(raw: bytes):
    """The splitter's contract, read the slow way: every field 'tag=value<SOH>', an integer
    tag (an optional minus and ASCII digits); else None (garbled)."""
    text = raw.decode("latin-1")
    if not text:
        return []
    if not text.endswith("\x01"):
        return None
    out = []
    for part in text.split("\x01")[:-1]:
        tag, eq, value = part.partition("=")
        body = tag[1:] if tag.startswith("-") else tag
        if not eq or not body or not all(c in "0123456789" for c in body):
            return None
        out.append((int(tag), value))
    return out


@pytest.mark.parametrize("seed", range(4))
def test_one_pass_splitter_agrees_with_field_by_field_reading(seed):
    rnd = random.Random(seed)
    alphabet = ["1", "0", "=", "\x01", "a", "-", "３", " ", "9", "é"]
    for _ in range(3000):
        if rnd.random() < 0.5:
            text = "".join(f"{rnd.choice(['8', '35', '0035', '-5', '9999', '١'])}="
                           f"{rnd.choice(['', 'x=y', 'FIX.4.4', '中'])}\x01"
                           for _ in range(rnd.randint(1, 6)))
        else:
            text = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 20)))
        raw = text.encode("utf-8")
        expected = field_by_field(raw)
        try:
            got = codec.split_fields(raw)
        except codec.GarbledMessage:
            got = None
        assert got == expected, raw
        if expected is not None:        # the second time every tag is known: the fast path
            assert codec.split_fields(raw) == expected
