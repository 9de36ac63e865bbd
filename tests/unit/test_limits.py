"""gateway/limits.py: the message-rate bucket and the failed-logon back-off, on a clock the
test moves (no waiting); and their settings in the gateway config."""
from __future__ import annotations

import pytest

from ccerx.gateway.config import DEMO_CONFIG, ConfigError, GatewayConfig
from ccerx.gateway.limits import LogonBackoff, MessageRate, SessionLimits


def test_the_bucket_allows_the_burst_then_the_rate():
    rate = MessageRate(rate=10, burst=5, logout_after=3)
    assert [rate.take(100.0) for _ in range(6)] == [True] * 5 + [False]
    assert rate.take(100.05) is False           # half a token back
    assert rate.take(100.15) is True            # a whole one
    assert rate.take(200.0) and rate._tokens == 4.0   # refilled to the burst, no further
    assert rate.rejected == 2


def test_only_a_continuous_excess_is_sustained():
    rate = MessageRate(rate=1, burst=1, logout_after=3)
    for tenth in range(1, 30):                   # 20 a second, from 0.1 s to 2.9 s
        rate.take(tenth / 10)
        rate.take(tenth / 10)
    assert rate.exceeded(2.9) and not rate.sustained(2.9)
    rate.take(3.2)
    rate.take(3.2)
    assert rate.sustained(3.2)                   # over the rate since 0.1 s
    assert not rate.exceeded(4.3) and not rate.sustained(4.3)   # a second's pause ends it
    rate.take(4.3)
    rate.take(4.3)
    assert rate.exceeded(4.3) and not rate.sustained(4.3)       # a new episode
    rate.reset()
    assert not rate.sustained(4.3)


def test_logging_on_again_does_not_refill_the_bucket():
    rate = MessageRate(rate=1, burst=3, logout_after=10)
    assert [rate.take(0.0) for _ in range(4)] == [True, True, True, False]
    rate.reset()
    assert rate.take(0.0) is False


def test_rate_zero_is_unlimited():
    rate = MessageRate(rate=0, burst=1, logout_after=1)
    assert all(rate.take(0.0) for _ in range(10_000))


def test_backoff_starts_at_the_second_failure_doubles_and_is_capped():
    backoff = LogonBackoff(initial=1.0, maximum=4.0)
    assert backoff.failed("B1", "10.0.0.9", 0.0) == 0.0          # one mistyped password: free
    assert backoff.wait("B1", "10.0.0.9", 0.0) == 0.0
    waits = [backoff.failed("B1", "10.0.0.9", 0.0) for _ in range(4)]
    assert waits == [1.0, 2.0, 4.0, 4.0]
    assert backoff.wait("B1", "10.0.0.9", 1.0) == 3.0                # this CompID from this address
    assert backoff.wait("B1", "10.0.0.9", 4.0) == 0.0                # over


def test_a_guesser_cannot_lock_a_broker_out_from_another_address_or_by_another_compid():
    """The reviewer's two lockouts: a guesser at 10.6.6.6 trying B1 must not keep B1 out at
    its own address nor at a new one (a disaster-recovery site, after a restart: nothing known
    about B1's good address); two wrong B2 logons from a shared address (NAT, a TLS proxy)
    must not refuse B1 from it."""
    backoff = LogonBackoff(initial=1.0, maximum=60.0)
    for _ in range(30):
        backoff.failed("B1", "10.6.6.6", 0.0)
    assert backoff.wait("B1", "10.6.6.6", 1.0) > 0                   # the guesser waits
    assert backoff.wait("B1", "10.0.0.1", 1.0) == 0.0                # B1 at its own address
    assert backoff.wait("B1", "10.9.9.9", 1.0) == 0.0                # B1 from a new site
    shared = LogonBackoff(initial=1.0, maximum=60.0)
    shared.failed("B2", "10.0.0.5", 0.0)
    shared.failed("B2", "10.0.0.5", 0.0)
    assert shared.wait("B2", "10.0.0.5", 0.5) > 0
    assert shared.wait("B1", "10.0.0.5", 0.5) == 0.0                 # another broker there


def test_an_address_spraying_many_compids_is_backed_off_but_not_its_known_brokers():
    backoff = LogonBackoff(initial=1.0, maximum=60.0)
    backoff.succeeded("B1", "10.0.0.5")                              # a broker behind the NAT
    for i in range(12):                                              # one failure per CompID
        backoff.failed(f"X{i}", "10.0.0.5", 0.0)
    assert backoff.wait("X99", "10.0.0.5", 0.5) > 0                  # the sprayer waits
    assert backoff.wait("B1", "10.0.0.5", 0.5) == 0.0                # its known broker does not
    assert backoff.wait("X99", "10.0.0.6", 0.5) == 0.0               # nor does anyone elsewhere


def test_a_good_logon_clears_its_own_backoff():
    backoff = LogonBackoff(initial=1.0, maximum=60.0)
    backoff.failed("B1", "10.0.0.1", 1.0)
    backoff.failed("B1", "10.0.0.1", 1.0)
    assert backoff.wait("B1", "10.0.0.1", 1.0) > 0                   # its own failures count
    backoff.succeeded("B1", "10.0.0.1")
    assert backoff.wait("B1", "10.0.0.1", 1.0) == 0.0


def test_the_backoff_table_stays_bounded():
    backoff = LogonBackoff(initial=1.0, maximum=2.0)
    for i in range(20_000):
        backoff.failed("B1", f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", float(i))
    assert len(backoff._failures) <= 4_097


def test_the_limits_come_from_the_gateway_config():
    assert GatewayConfig.demo().limits == SessionLimits()
    text = DEMO_CONFIG.replace('comp_id = "CCERX"\n', 'comp_id = "CCERX"\nmessage_rate = 0\n'
                               'logon_backoff_ms = 250\nlogon_backoff_max_ms = 1000\n', 1)
    limits = GatewayConfig.from_toml_text(text).limits
    assert (limits.message_rate, limits.logon_backoff_ms, limits.logon_backoff_max_ms) == (0, 250, 1000)
    for bad in ('message_rate = "500"', "message_rate = -1", "message_burst = 0",
                "rate_logout_after_s = 1.5", "logon_backoff_ms = 2000\nlogon_backoff_max_ms = 1000"):
        with pytest.raises(ConfigError, match="gateway"):
            GatewayConfig.from_toml_text(DEMO_CONFIG.replace('comp_id = "CCERX"\n',
                                                             f'comp_id = "CCERX"\n{bad}\n', 1))
