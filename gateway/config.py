"""The gateway's configuration: its CompID, the broker sessions, their credentials and accounts.

A TOML file (see DEMO_CONFIG below for the full shape):

    [gateway]
    comp_id = "CCERX"              # our SenderCompID
    fee_rate = "0.006"             # optional, per side
    instruments = "instruments.toml"   # optional, relative to this file; default: the CCER set
    message_rate = 500             # optional: application messages a second per session
                                   # (token bucket; 0 = unlimited); excess is rejected (35=j)
    message_burst = 1000           # optional: messages a session may send at once
    rate_logout_after_s = 10       # optional: a session over the rate this long is logged out
    logon_backoff_ms = 1000        # optional: wait after a failed logon (per CompID and per
    logon_backoff_max_ms = 60000   #   source address), doubled per failure up to this
    heartbeat_bounds = [1, 300]    # optional: HeartBtInt (seconds) a broker's Logon may ask
                                   # for; outside them the Logon is refused (0 = no heartbeats,
                                   # a silent connection is still timed out)
    rules = "cbeex-2023"           # optional: the rule profile (engine/core/rules.py) a new
                                   # data directory starts with; `ccerx serve --rules` wins
    max_order_qty = 50000          # optional: a single-order maximum (t) for every instrument
                                   # (cbeex-2023 has none unless this is set)

    [[broker]]
    comp_id = "BROKER01"           # the broker's SenderCompID, also its member id
    password = "scrypt$16384$8$1$<salt hex>$<hash hex>"   # from `ccerx hash-password`
    heartbeat_interval = 30        # optional
    reset_on_logon = false         # optional

    [[broker.account]]
    account = "EMIT01"
    type = "key_emission_unit"     # a ParticipantType value
    cash = "100000000.00"          # CNY, decimal string
    credits = { "CCER-AFF" = 0 }   # whole tonnes per credit type

    [[broker]]                     # a drop copy session: no accounts, sends no orders, gets a
    comp_id = "BROKER01-DC"        # copy of every ExecutionReport of BROKER01's session
    drop_copy_for = "BROKER01"

    [limits]                       # optional: Art.37 position limits by participant type
    report_pct = "50"              # Art.38: report a holding at this share of a limit
    [limits.key_emission_unit]     # a ParticipantType value; a type not named has no limit
    per_instrument = 500000        # t of one credit type (owned + open buys), optional
    total = 1000000                # t of all credit types together, optional

The limits are part of the exchange's genesis (a new data directory starts with them); later
changes go through the operator (`ccerx operator limits`), journaled.

Passwords are never stored in plain text: `password` holds a salted scrypt (or
pbkdf2_sha256) hash, checked in constant time. A broker without a password logs on with
its CompID alone (only sensible on a closed network). Each account is registered to exactly
one broker; that is the permission the exchange application enforces.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ccerx.engine.core.risk import Account, Accounts, DEFAULT_FEE_PPM, PPM
from ccerx.engine.core.rules import PROFILES, RuleProfile, profile
from ccerx.engine.core.types import ParticipantType, parse_decimal_units
from ccerx.engine.formats.config import account_from_row
from ccerx.engine.formats.ndjson import limits_from_fields

from ccerx.gateway.fix.application import FixMessage, SessionKey
from ccerx.gateway.fix.session import DEFAULT_HEARTBEAT_BOUNDS
from ccerx.gateway.limits import SessionLimits

BEGIN_STRING = "FIX.4.4"
TAG_USERNAME, TAG_PASSWORD = 553, 554

# scrypt parameters: ~50 ms and 16 MiB per check, cheap for a logon, dear for a guesser.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 14, 8, 1
PBKDF2_MIN_ITERATIONS = 100_000


class ConfigError(ValueError):
    pass


# ------------------------------------------------------------------ password hashes
def hash_password(password: str, salt: Optional[bytes] = None) -> str:
    """'scrypt$N$r$p$salt_hex$hash_hex' for a config file's `password`."""
    if not isinstance(password, str) or not password:
        raise ValueError("password must be a non-empty string")
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def parse_password_hash(stored: str) -> tuple:
    parts = stored.split("$") if isinstance(stored, str) else []
    try:
        if parts[0] == "scrypt" and len(parts) == 6:
            n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
            if n < 2 or n & (n - 1) or not 0 < r <= 64 or not 0 < p <= 16 or n * r > 2 ** 24:
                raise ValueError
            return ("scrypt", (n, r, p), bytes.fromhex(parts[4]), bytes.fromhex(parts[5]))
        if parts[0] == "pbkdf2_sha256" and len(parts) == 4:
            iterations = int(parts[1])
            if not PBKDF2_MIN_ITERATIONS <= iterations <= 10_000_000:
                raise ValueError
            return ("pbkdf2_sha256", iterations, bytes.fromhex(parts[2]), bytes.fromhex(parts[3]))
    except (ValueError, IndexError):
        pass
    # never echo the value: it may be a plain-text password (startup errors reach logs)
    kind = ("not a string" if not isinstance(stored, str) else "empty" if not stored
            else "plain text or a malformed hash")
    raise ConfigError("password must be a hash 'scrypt$N$r$p$salt$hash' or "
                      "'pbkdf2_sha256$iterations$salt$hash' (made by `ccerx hash-password`); "
                      f"this one is {kind} (its value is not shown)")


def verify_password(password: str, stored: str) -> bool:
    scheme, params, salt, expected = parse_password_hash(stored)
    data = password.encode("utf-8", "surrogateescape")
    if scheme == "scrypt":
        n, r, p = params
        digest = hashlib.scrypt(data, salt=salt, n=n, r=r, p=p, maxmem=256 * n * r + (1 << 20),
                                dklen=len(expected))
    else:
        digest = hashlib.pbkdf2_hmac("sha256", data, salt, params, dklen=len(expected))
    return hmac.compare_digest(digest, expected)


# ------------------------------------------------------------------ the config
@dataclass(frozen=True)
class AccountConfig:
    account: str
    participant_type: ParticipantType
    cash_fen: int
    credits: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class BrokerConfig:
    comp_id: str
    password_hash: Optional[str]
    accounts: tuple[AccountConfig, ...]
    heartbeat_interval: int = 30
    reset_on_logon: bool = False
    drop_copy_for: Optional[str] = None   # a drop copy session of this member (no accounts)


@dataclass
class GatewayConfig:
    comp_id: str
    brokers: dict[str, BrokerConfig]
    fee_ppm: int = DEFAULT_FEE_PPM
    instruments_path: Optional[Path] = None
    source: str = "<demo>"
    limits: SessionLimits = SessionLimits()
    heartbeat_bounds: tuple[int, int] = DEFAULT_HEARTBEAT_BOUNDS
    rules: Optional[str] = None            # rule profile name; None: the command's default
    max_order_qty: Optional[int] = None    # configured single-order maximum, tonnes
    # Art.37/38 ([limits]): SetLimits fields ((type, per instrument, total), ...), report ppm
    position_limits: tuple = ()
    report_ppm: int = 0

    def rule_profile(self, name: Optional[str] = None, default: str = "cbeex-2023") -> RuleProfile:
        """The rule profile to run: `name` (a command-line choice) if given, else the
        config's, else `default`; with the config's max_order_qty if set. ConfigError if
        the name is unknown."""
        try:
            chosen = profile(name or self.rules or default)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        return chosen if self.max_order_qty is None else chosen.with_max_qty(self.max_order_qty)

    def session_key(self, broker: str) -> SessionKey:
        return SessionKey(BEGIN_STRING, self.comp_id, broker)

    def build_accounts(self) -> Accounts:
        """A fresh engine account table (each account's `member` is its broker)."""
        table = Accounts(fee_ppm=self.fee_ppm)
        for broker in self.brokers.values():
            for row in broker.accounts:
                table.add(Account(row.account, row.participant_type, broker.comp_id,
                                  row.cash_fen, credits=dict(row.credits)))
        if self.position_limits or self.report_ppm:
            table.limits = {ParticipantType(t): (per, total)
                            for t, per, total in self.position_limits}
            table.report_ppm = self.report_ppm
        return table

    def authenticate(self, key: SessionKey, logon: FixMessage) -> Optional[str]:
        """The server's logon check: None to accept, else the text of the Logout."""
        broker = self.brokers.get(key.their_comp_id)
        if broker is None or key.our_comp_id != self.comp_id:
            return "unknown session"
        username = logon.get(TAG_USERNAME)
        if username is not None and username != broker.comp_id:
            return "invalid username or password"
        if broker.password_hash is None:
            return None
        password = logon.get(TAG_PASSWORD)
        if password is None:
            return "password required (Password 554)"
        if not verify_password(password, broker.password_hash):
            return "invalid username or password"
        return None

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_toml_text(cls, text: str, source: str = "<text>",
                       base_dir: Optional[Path] = None) -> "GatewayConfig":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{source}: not valid TOML: {err}") from None
        try:
            return cls._from_dict(data, source, base_dir)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None

    @classmethod
    def load(cls, path: str | Path) -> "GatewayConfig":
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            reason = err.strerror if isinstance(err, OSError) else err   # the path once
            raise ConfigError(f"cannot read {path}: {reason}") from None
        return cls.from_toml_text(text, str(path), path.parent)

    @classmethod
    def demo(cls) -> "GatewayConfig":
        return cls.from_toml_text(DEMO_CONFIG, "<built-in demo config>")

    @classmethod
    def _from_dict(cls, data: dict, source: str, base_dir: Optional[Path]) -> "GatewayConfig":
        gateway = data.get("gateway")
        if not isinstance(gateway, dict):
            raise ConfigError("missing [gateway] table")
        comp_id = _comp_id(gateway.get("comp_id"), "gateway.comp_id")
        fee_ppm = DEFAULT_FEE_PPM
        if "fee_rate" in gateway:
            rate = gateway["fee_rate"]
            if not isinstance(rate, str):
                raise ConfigError("gateway.fee_rate must be a decimal string, e.g. \"0.006\"")
            try:
                fee_ppm = parse_decimal_units(rate, PPM)
            except ValueError as err:
                raise ConfigError(f"gateway.fee_rate: {err}") from None
            if not 0 <= fee_ppm < PPM:
                raise ConfigError("gateway.fee_rate must be in [0, 1)")
        instruments_path = None
        if gateway.get("instruments") is not None:
            if not isinstance(gateway["instruments"], str):
                raise ConfigError("gateway.instruments must be a file path")
            instruments_path = Path(gateway["instruments"])
            if base_dir is not None and not instruments_path.is_absolute():
                instruments_path = base_dir / instruments_path
        limits = _limits(gateway)
        heartbeat_bounds = _heartbeat_bounds(gateway.get("heartbeat_bounds",
                                                         list(DEFAULT_HEARTBEAT_BOUNDS)))
        rules = gateway.get("rules")
        if rules is not None and rules not in PROFILES:
            raise ConfigError(f"gateway.rules must be one of {', '.join(PROFILES)}, not {rules!r}")
        max_order_qty = gateway.get("max_order_qty")
        if max_order_qty is not None and (type(max_order_qty) is not int or max_order_qty < 1):
            raise ConfigError("gateway.max_order_qty must be a positive whole number of tonnes")
        unknown = set(gateway) - {"comp_id", "fee_rate", "instruments", "heartbeat_bounds",
                                  "rules", "max_order_qty", *_LIMIT_KEYS}
        if unknown:
            raise ConfigError(f"unknown key(s) in [gateway]: {sorted(unknown)}")

        rows = data.get("broker")
        if not isinstance(rows, list) or not rows:
            raise ConfigError("at least one [[broker]] is required")
        brokers: dict[str, BrokerConfig] = {}
        seen_accounts: set[str] = set()
        for row in rows:
            broker = _broker(row)
            if broker.comp_id in brokers or broker.comp_id == comp_id:
                raise ConfigError(f"duplicate CompID {broker.comp_id!r}")
            for acc in broker.accounts:
                if acc.account in seen_accounts:
                    raise ConfigError(f"account {acc.account!r} is registered to two brokers")
                seen_accounts.add(acc.account)
            brokers[broker.comp_id] = broker
        for broker in brokers.values():
            member = broker.drop_copy_for
            if member is not None and (member not in brokers
                                       or brokers[member].drop_copy_for is not None):
                raise ConfigError(f"broker {broker.comp_id}: drop_copy_for must name a trading "
                                  f"[[broker]], not {member!r}")
        unknown = set(data) - {"gateway", "broker", "limits"}
        if unknown:
            raise ConfigError(f"unknown table(s): {sorted(unknown)}")
        position_limits, report_ppm = _position_limits(data.get("limits", {}))
        return cls(comp_id, brokers, fee_ppm, instruments_path, source, limits,
                   heartbeat_bounds, rules, max_order_qty, position_limits, report_ppm)


def _position_limits(table) -> tuple[tuple, int]:
    """[limits] -> (SetLimits rows, report ppm); ConfigError saying what is wrong."""
    if not isinstance(table, dict):
        raise ConfigError("[limits] must be a table")
    caps = {k: v for k, v in table.items() if k != "report_pct"}
    try:
        rows, ppm = limits_from_fields(caps, table.get("report_pct"))
    except ValueError as err:
        raise ConfigError(f"[limits]: {err}") from None
    types = {t.value for t in ParticipantType}
    for ptype, per, total in rows:
        if ptype not in types:
            raise ConfigError(f"[limits.{ptype}]: not a participant type ({', '.join(sorted(types))})")
        for value in (per, total):
            if value is not None and (type(value) is not int or not 0 < value <= 10 ** 15):
                raise ConfigError(f"[limits.{ptype}]: limits are positive whole tonnes")
    return rows, ppm


def _heartbeat_bounds(value) -> tuple[int, int]:
    if (not isinstance(value, list) or len(value) != 2 or any(type(v) is not int for v in value)
            or not 0 <= value[0] <= value[1] <= 3600):
        raise ConfigError("gateway.heartbeat_bounds must be [lowest, highest] HeartBtInt in "
                          "seconds, 0 <= lowest <= highest <= 3600, e.g. [1, 300]")
    return value[0], value[1]


# [gateway] key -> (lowest, highest) accepted; every one is an optional integer.
_LIMIT_KEYS = {
    "message_rate": (0, 1_000_000), "message_burst": (1, 10_000_000),
    "rate_logout_after_s": (1, 86_400),
    "logon_backoff_ms": (0, 3_600_000), "logon_backoff_max_ms": (0, 86_400_000),
}


def _limits(gateway: dict) -> SessionLimits:
    values = {}
    for name, (low, high) in _LIMIT_KEYS.items():
        if name in gateway:
            value = gateway[name]
            if type(value) is not int or not low <= value <= high:
                raise ConfigError(f"gateway.{name} must be an integer of {low}-{high}")
            values[name] = value
    limits = SessionLimits(**values)
    if limits.logon_backoff_max_ms < limits.logon_backoff_ms:
        raise ConfigError("gateway.logon_backoff_max_ms must be at least logon_backoff_ms")
    return limits


def _comp_id(value, label: str) -> str:
    if (not isinstance(value, str) or not value or len(value) > 32
            or not all(c.isalnum() or c in "_-." for c in value)):
        raise ConfigError(f"{label} must be 1-32 letters, digits, '_', '-' or '.'")
    return value


def _broker(row) -> BrokerConfig:
    if not isinstance(row, dict):
        raise ConfigError("each [[broker]] must be a table")
    comp_id = _comp_id(row.get("comp_id"), "broker.comp_id")
    where = f"broker {comp_id}"
    password = row.get("password")
    if password is not None:
        parse_password_hash(password)  # raises on plain text or a malformed hash
    heartbeat = row.get("heartbeat_interval", 30)
    if type(heartbeat) is not int or not 1 <= heartbeat <= 3600:
        raise ConfigError(f"{where}: heartbeat_interval must be an integer of 1-3600 seconds")
    reset = row.get("reset_on_logon", False)
    if type(reset) is not bool:
        raise ConfigError(f"{where}: reset_on_logon must be true or false")
    unknown = set(row) - {"comp_id", "password", "heartbeat_interval", "reset_on_logon", "account",
                          "drop_copy_for"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
    accounts = []
    for acc in row.get("account", []):
        accounts.append(_account(acc, where))
    drop_copy_for = row.get("drop_copy_for")
    if drop_copy_for is not None:
        drop_copy_for = _comp_id(drop_copy_for, f"{where}: drop_copy_for")
        if accounts:
            raise ConfigError(f"{where}: a drop copy session has no accounts")
    return BrokerConfig(comp_id, password, tuple(accounts), heartbeat, reset, drop_copy_for)


def _account(row, where: str) -> AccountConfig:
    """The one account schema (engine/formats/config.py), minus `member`: the broker table
    says whose account it is."""
    try:
        account = account_from_row(row, allow_member=False)
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None
    return AccountConfig(account.account, account.participant_type, account.cash,
                         tuple(sorted(account.credits.items())))


# The built-in demo: what `ccerx serve` runs with no --config. Passwords demo01 / demo02,
# stored as scrypt hashes like any real config.
DEMO_CONFIG = """\
[gateway]
comp_id = "CCERX"

[[broker]]
comp_id = "BROKER01"
# password "demo01"
password = "scrypt$16384$8$1$6bb91db9571959ec56d1161c217b4f59$9441471afced6d9e398e1cd2424b88555038d3378f217a22a2afb9fafd019103"

[[broker.account]]
account = "EMIT01"
type = "key_emission_unit"
cash = "100000000.00"

[[broker.account]]
account = "HOLD01"
type = "project_owner"
credits = { "CCER-AFF" = 1000000, "CCER-SOL" = 1000000, "CCER-OWF" = 1000000, "CCER-MGV" = 1000000 }

[[broker]]
comp_id = "BROKER02"
# password "demo02"
password = "scrypt$16384$8$1$455d3a2ad36030a98a2516036910f629$fd77bc1e593b2f8377e9f317131bdd8d7874005b026f43aebf8c8c4d25ba26e5"

[[broker.account]]
account = "EMIT02"
type = "key_emission_unit"
cash = "100000000.00"

[[broker.account]]
account = "HOLD02"
type = "project_owner"
credits = { "CCER-AFF" = 1000000, "CCER-SOL" = 1000000, "CCER-OWF" = 1000000, "CCER-MGV" = 1000000 }
"""
