"""The gateway config: TOML loading, hashed passwords, the demo config, logon checks."""
from __future__ import annotations

import pytest

from ccerx.engine.core.types import ParticipantType
from ccerx.gateway.config import ConfigError, GatewayConfig, hash_password, verify_password
from ccerx.gateway.fix.application import FixMessage, SessionKey

B1 = SessionKey("FIX.4.4", "CCERX", "BROKER01")


def logon(*fields):
    return FixMessage.of("A", (98, 0), (108, 30), *fields)


def test_demo_config_matches_the_issue():
    config = GatewayConfig.demo()
    assert config.comp_id == "CCERX"
    assert list(config.brokers) == ["BROKER01", "BROKER02"]
    accounts = config.build_accounts()
    for n in ("01", "02"):
        emit, hold = accounts.get(f"EMIT{n}"), accounts.get(f"HOLD{n}")
        assert emit.member == hold.member == f"BROKER{n}"
        assert emit.participant_type is ParticipantType.KEY_EMISSION_UNIT
        assert emit.cash == 100_000_000_00 and not any(emit.credits.values())
        assert hold.participant_type is ParticipantType.PROJECT_OWNER
        assert hold.credits == {s: 1_000_000 for s in ("CCER-AFF", "CCER-SOL", "CCER-OWF", "CCER-MGV")}
    # no plain-text password anywhere in the config
    for broker in config.brokers.values():
        assert broker.password_hash.startswith("scrypt$") and "demo0" not in broker.password_hash


def test_demo_passwords_authenticate():
    config = GatewayConfig.demo()
    assert config.authenticate(B1, logon((553, "BROKER01"), (554, "demo01"))) is None
    assert config.authenticate(B1, logon((554, "demo01"))) is None  # Username optional
    assert config.authenticate(B1, logon((554, "demo02"))) == "invalid username or password"
    assert config.authenticate(B1, logon((553, "BROKER02"), (554, "demo01"))) == \
        "invalid username or password"
    assert "password required" in config.authenticate(B1, logon())
    b2 = SessionKey("FIX.4.4", "CCERX", "BROKER02")
    assert config.authenticate(b2, logon((554, "demo02"))) is None
    assert config.authenticate(SessionKey("FIX.4.4", "CCERX", "NOBODY"), logon()) == "unknown session"


def test_hash_round_trip_and_salt():
    one, two = hash_password("s3cret"), hash_password("s3cret")
    assert one != two  # salted
    assert verify_password("s3cret", one) and verify_password("s3cret", two)
    assert not verify_password("s3cret ", one)
    assert not verify_password("", one)


def test_pbkdf2_hashes_are_accepted():
    import hashlib
    salt = bytes(range(16))
    digest = hashlib.pbkdf2_hmac("sha256", b"pw", salt, 120_000)
    stored = f"pbkdf2_sha256$120000${salt.hex()}${digest.hex()}"
    assert verify_password("pw", stored)
    assert not verify_password("pw2", stored)


CONFIG = """
[gateway]
comp_id = "EXCH"
fee_rate = "0.001"
instruments = "instruments.toml"

[[broker]]
comp_id = "BRK"
password = "{hash}"
heartbeat_interval = 10
reset_on_logon = true

[[broker.account]]
account = "A1"
type = "investment_institution"
cash = "1234.56"
credits = {{ "CCER-AFF" = 5 }}
"""


def test_load_from_file(tmp_path):
    (tmp_path / "instruments.toml").write_text('[[instrument]]\nsymbol = "CCER-AFF"\nref_price = "10.00"\n')
    path = tmp_path / "gw.toml"
    path.write_text(CONFIG.format(hash=hash_password("pw")))
    config = GatewayConfig.load(path)
    assert config.comp_id == "EXCH" and config.fee_ppm == 1000
    assert config.instruments_path == tmp_path / "instruments.toml"
    broker = config.brokers["BRK"]
    assert (broker.heartbeat_interval, broker.reset_on_logon) == (10, True)
    account = config.build_accounts().get("A1")
    assert (account.cash, account.credits, account.member) == (123456, {"CCER-AFF": 5}, "BRK")
    assert config.build_accounts().fee_ppm == 1000
    key = config.session_key("BRK")
    assert key == SessionKey("FIX.4.4", "EXCH", "BRK")
    assert config.authenticate(key, logon((554, "pw"))) is None


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace('password = "', 'password = "plain'), "password must be a hash"),
    (lambda t: t.replace('cash = "1234.56"', "cash = 1234.56"), "cash must be a decimal string"),
    (lambda t: t.replace('"investment_institution"', '"bank"'), "unknown type"),
    (lambda t: t.replace('comp_id = "BRK"', 'comp_id = "EXCH"'), "duplicate CompID"),
    (lambda t: t.replace("heartbeat_interval = 10", "heartbeat_interval = 0"), "heartbeat_interval"),
    (lambda t: t.replace('fee_rate = "0.001"', 'fee_rate = "1.5"'), "fee_rate"),
    (lambda t: t.replace("[[broker.account]]", "colour = 1\n[[broker.account]]"), "unknown key"),
    (lambda t: t + '\n[[broker]]\ncomp_id = "BRK2"\n[[broker.account]]\naccount = "A1"\n',
     "registered to two brokers"),
    (lambda t: t.replace("[gateway]", "[gateway\n"), "not valid TOML"),
])
def test_bad_configs_are_refused_with_a_reason(tmp_path, edit, message):
    path = tmp_path / "gw.toml"
    path.write_text(edit(CONFIG.format(hash=hash_password("pw"))))
    with pytest.raises(ConfigError, match=message):
        GatewayConfig.load(path)


def test_malformed_hash_parameters_are_refused():
    with pytest.raises(ConfigError):
        verify_password("x", "scrypt$3$8$1$00$00")  # N not a power of two
    with pytest.raises(ConfigError):
        verify_password("x", "pbkdf2_sha256$10$00$00")  # too few iterations


def test_cli_hash_password_and_refused_config(tmp_path, capsys):
    from ccerx.scripts.ccerx import main
    assert main(["hash-password", "--password", "pw"]) == 0
    stored = capsys.readouterr().out.strip()
    assert verify_password("pw", stored) and "pw" not in stored.split("$")
    bad = tmp_path / "bad.toml"
    bad.write_text(CONFIG.format(hash="plain-text-password"))
    assert main(["serve", "--config", str(bad), "--data-dir", str(tmp_path / "d")]) == 2
    assert "password must be a hash" in capsys.readouterr().err
    assert main(["serve", "--print-demo-config"]) == 0
    assert GatewayConfig.from_toml_text(capsys.readouterr().out).comp_id == "CCERX"
