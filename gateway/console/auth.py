"""Who may use the console: the operators file, password checks, sessions with CSRF tokens.

The operators file (TOML):

    [[operator]]
    name = "wangfang"                 # the login name (recorded with every action)
    display = "王芳"                   # optional, shown in the page header
    password = "scrypt$16384$8$1$<salt hex>$<hash hex>"   # `ccerx hash-password`

Sessions live in memory (a restart logs everyone out), expire after `SESSION_TTL_S` without
use, and carry their own CSRF token, which every state-changing request must send back
(header X-CSRF-Token, or form field csrf): a page of another site can make the browser send
the cookie but cannot read the token.
"""
from __future__ import annotations

import hmac
import secrets
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ccerx.engine.core.types import control_character
from ccerx.gateway.config import ConfigError, parse_password_hash, verify_password

SESSION_TTL_S = 8 * 3600
COOKIE = "ccerx_console"
MAX_SESSIONS = 1000


@dataclass(frozen=True)
class Operator:
    name: str
    password_hash: str
    display: str = ""


def load_operators(path) -> dict[str, Operator]:
    """name -> Operator from an operators file; raises ConfigError (never showing a password)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read {path}: {getattr(err, 'strerror', None) or err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    rows = data.get("operator")
    if not isinstance(rows, list) or not rows or set(data) - {"operator"}:
        raise ConfigError(f"{path}: expected one or more [[operator]] tables and nothing else")
    operators: dict[str, Operator] = {}
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict) or set(row) - {"name", "password", "display"}:
            raise ConfigError(f"{path}: operator {number}: keys are name, password, display")
        name, display = row.get("name"), row.get("display", "")
        if (not isinstance(name, str) or not name or len(name) > 64
                or control_character(name) is not None or " " in name):
            raise ConfigError(f"{path}: operator {number}: name must be 1-64 characters of "
                              f"text without spaces")
        if not isinstance(display, str) or control_character(display) is not None:
            raise ConfigError(f"{path}: operator {name}: display must be one line of text")
        if name in operators:
            raise ConfigError(f"{path}: operator {name} appears twice")
        try:
            parse_password_hash(row.get("password"))
        except ConfigError as err:
            raise ConfigError(f"{path}: operator {name}: {err}") from None
        operators[name] = Operator(name, row["password"], display)
    return operators


@dataclass
class Session:
    operator: Operator
    csrf: str
    last_used: float = field(default_factory=time.monotonic)


class Sessions:
    def __init__(self, operators: dict[str, Operator], clock=time.monotonic):
        self.operators = operators
        self.clock = clock
        self._sessions: dict[str, Session] = {}
        # a fixed hash to check unknown names against, so they take as long as known ones
        self._decoy = next(iter(operators.values())).password_hash if operators else None

    def check_password(self, name: str, password: str) -> Optional[Operator]:
        """The operator if `password` is theirs (constant time per hash); else None."""
        operator = self.operators.get(name) if isinstance(name, str) else None
        if not isinstance(password, str) or not password:
            return None
        stored = operator.password_hash if operator is not None else self._decoy
        if stored is None:
            return None
        ok = verify_password(password, stored)
        return operator if ok and operator is not None else None

    def open(self, operator: Operator) -> str:
        now = self.clock()
        if len(self._sessions) >= MAX_SESSIONS:
            self._expire(now)
            if len(self._sessions) >= MAX_SESSIONS:   # the oldest goes
                oldest = min(self._sessions, key=lambda k: self._sessions[k].last_used)
                del self._sessions[oldest]
        token = secrets.token_urlsafe(32)
        self._sessions[token] = Session(operator, secrets.token_urlsafe(32), now)
        return token

    def get(self, token: Optional[str]) -> Optional[Session]:
        if not token:
            return None
        session = self._sessions.get(token)
        now = self.clock()
        if session is None or now - session.last_used > SESSION_TTL_S:
            self._sessions.pop(token, None)
            return None
        session.last_used = now
        return session

    def close(self, token: Optional[str]) -> None:
        self._sessions.pop(token or "", None)

    def _expire(self, now: float) -> None:
        for token in [t for t, s in self._sessions.items() if now - s.last_used > SESSION_TTL_S]:
            del self._sessions[token]


def same_token(given: Optional[str], expected: str) -> bool:
    return isinstance(given, str) and hmac.compare_digest(given.encode(), expected.encode())
