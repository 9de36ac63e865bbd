"""The alerts store and the cases on them: one SQLite file, private (0600, engine/durable/files.py).

Every alert surveillance raises is stored once, under its id (a rerun over the same events
finds the same ids, so it adds nothing and reopens nothing). Each alert is a case, in one of
three states, moved only along these transitions, each recorded in `case_history` with the
time, the operator and the note:

    open --review--> under_review --close(note)--> closed
    open --close(note)--> closed
    closed --reopen(note)--> under_review

Closing and reopening need a note (why: no case is closed without a reason on record). Notes
are text in any language (Chinese included), tabs and newlines allowed, other control
characters refused. A refused change changes nothing (CaseError, raised before any write).
"""
from __future__ import annotations

import sqlite3
import unicodedata
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Optional

import orjson

from ccerx.engine.durable.files import make_private, private_sqlite, sqlite_companions

OPEN, UNDER_REVIEW, CLOSED = "open", "under_review", "closed"
STATES = (OPEN, UNDER_REVIEW, CLOSED)
TRANSITIONS = {(OPEN, "review"): UNDER_REVIEW, (OPEN, "close"): CLOSED,
               (UNDER_REVIEW, "close"): CLOSED, (CLOSED, "reopen"): UNDER_REVIEW}
NEEDS_NOTE = ("close", "reopen")
MAX_NOTE = 4000

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    alert_id TEXT PRIMARY KEY, rule TEXT NOT NULL, kind TEXT NOT NULL, instrument TEXT NOT NULL,
    accounts TEXT NOT NULL, score INTEGER NOT NULL, ts INTEGER NOT NULL,
    trigger_seq INTEGER NOT NULL, body TEXT NOT NULL, source TEXT NOT NULL,
    stored_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cases (
    alert_id TEXT PRIMARY KEY REFERENCES alerts(alert_id),
    state TEXT NOT NULL CHECK (state IN ('open', 'under_review', 'closed')),
    note TEXT NOT NULL DEFAULT '', operator TEXT NOT NULL DEFAULT '', updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS case_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT, alert_id TEXT NOT NULL REFERENCES alerts(alert_id),
    at TEXT NOT NULL, operator TEXT NOT NULL, action TEXT NOT NULL, from_state TEXT,
    to_state TEXT NOT NULL, note TEXT NOT NULL DEFAULT '');
"""


class CaseError(ValueError):
    """A case change that is refused (unknown alert, a transition the states do not allow,
    a missing or unprintable note); nothing was changed."""


def note_problem(note: str) -> Optional[str]:
    if not isinstance(note, str):
        return "a note is text"
    if len(note) > MAX_NOTE:
        return f"a note is at most {MAX_NOTE} characters"
    for char in note:
        if char not in "\n\t" and unicodedata.category(char) in ("Cc", "Cf", "Cs"):
            return f"the note holds a control character ({char!r})"
    return None


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, timezone.utc).isoformat(timespec="seconds")


class CaseStore:
    def __init__(self, path, clock_ns=None):
        """`clock_ns()` gives the time of each change (the caller's clock: this module reads
        none of its own)."""
        self.path = Path(path)
        private_sqlite(self.path)
        self.db = sqlite3.connect(self.path)
        self.db.execute("PRAGMA foreign_keys = ON")
        self.db.executescript(SCHEMA)
        self.db.commit()
        make_private(*sqlite_companions(self.path))
        self.clock_ns = clock_ns or (lambda: 0)

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def add_alerts(self, alerts: Iterable, source: str) -> tuple[int, int]:
        """Store the alerts not yet stored, each with an open case: (added, already known)."""
        now = _iso(self.clock_ns())
        added = known = 0
        with self.db:
            for alert in alerts:
                body = orjson.dumps(alert.to_json(), option=orjson.OPT_SORT_KEYS).decode()
                cursor = self.db.execute(
                    "INSERT OR IGNORE INTO alerts VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (alert.alert_id, alert.rule, alert.kind, alert.instrument,
                     orjson.dumps(list(alert.accounts)).decode(), alert.score, alert.ts,
                     alert.trigger_seq, body, source, now))
                if not cursor.rowcount:
                    known += 1
                    continue
                added += 1
                self.db.execute("INSERT INTO cases VALUES (?,?,?,?,?)",
                                (alert.alert_id, OPEN, "", "", now))
                self.db.execute("INSERT INTO case_history (alert_id, at, operator, action, "
                                "from_state, to_state, note) VALUES (?,?,?,?,?,?,?)",
                                (alert.alert_id, now, "", "raised", None, OPEN, ""))
        return added, known

    def cases(self, state: Optional[str] = None, rule: Optional[str] = None) -> list[dict]:
        """Cases, highest score first (then by id), optionally of one state and rule."""
        if state is not None and state not in STATES:
            raise CaseError(f"unknown state {state!r}; states are {', '.join(STATES)}")
        query = ("SELECT a.alert_id, a.rule, a.kind, a.instrument, a.accounts, a.score, a.ts, "
                 "c.state, c.note, c.operator, c.updated_at FROM alerts a JOIN cases c "
                 "USING (alert_id) WHERE (? IS NULL OR c.state = ?) AND (? IS NULL OR a.rule = ?) "
                 "ORDER BY a.score DESC, a.alert_id")
        names = ("id", "rule", "kind", "instrument", "accounts", "score", "ts", "state", "note",
                 "operator", "updated_at")
        rows = self.db.execute(query, (state, state, rule, rule)).fetchall()
        out = []
        for row in rows:
            case = dict(zip(names, row))
            case["accounts"] = orjson.loads(case["accounts"])
            out.append(case)
        return out

    def case(self, alert_id: str) -> dict:
        """One case: the alert (with its evidence), its state and its history."""
        row = self.db.execute("SELECT a.body, c.state, c.note, c.operator, c.updated_at FROM "
                              "alerts a JOIN cases c USING (alert_id) WHERE alert_id = ?",
                              (alert_id,)).fetchone()
        if row is None:
            raise CaseError(f"no alert {alert_id!r} in {self.path}")
        history = [dict(zip(("at", "operator", "action", "from_state", "to_state", "note"), h))
                   for h in self.db.execute(
                       "SELECT at, operator, action, from_state, to_state, note FROM "
                       "case_history WHERE alert_id = ? ORDER BY id", (alert_id,))]
        return {"alert": orjson.loads(row[0]), "state": row[1], "note": row[2],
                "operator": row[3], "updated_at": row[4], "history": history}

    def act(self, alert_id: str, action: str, operator: str = "", note: str = "") -> dict:
        """Move a case (`review`, `close`, `reopen`); returns the case after. Raises CaseError."""
        problem = note_problem(note) or note_problem(operator)
        if problem:
            raise CaseError(problem)
        if action in NEEDS_NOTE and not note.strip():
            raise CaseError(f"{action} needs a note saying why")
        current = self.case(alert_id)["state"]
        target = TRANSITIONS.get((current, action))
        if target is None:
            allowed = [a for (s, a) in TRANSITIONS if s == current]
            raise CaseError(f"case {alert_id} is {current}: {action} is not possible "
                            f"(possible: {', '.join(allowed) or 'nothing'})")
        now = _iso(self.clock_ns())
        with self.db:
            self.db.execute("UPDATE cases SET state = ?, note = ?, operator = ?, updated_at = ? "
                            "WHERE alert_id = ?", (target, note, operator, now, alert_id))
            self.db.execute("INSERT INTO case_history (alert_id, at, operator, action, "
                            "from_state, to_state, note) VALUES (?,?,?,?,?,?,?)",
                            (alert_id, now, operator, action, current, target, note))
        return self.case(alert_id)
