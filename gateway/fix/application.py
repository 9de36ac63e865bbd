"""The contract between the FIX session layer and the applications behind it.

The session layer (session.py) owns logon, heartbeats, sequence numbers, resends, session
rejects and the header. An application sees only validated, in-sequence application
messages and answers with application messages (MsgType 35 plus body fields; the session
layer adds the header, sequence number and trailer). An application may address messages to
any session it knows (an execution for a resting order goes to the broker that owns it),
including one that is logged out: the server stores such a message in that session's store so
the broker recovers it by ResendRequest after it logs on again.
"""
from __future__ import annotations

from typing import Iterator, NamedTuple, Optional, Protocol

from ccerx.gateway.fix.codec import redacted


class SessionKey(NamedTuple):
    begin_string: str     # "FIX.4.4"
    our_comp_id: str      # the gateway's SenderCompID on outgoing messages, e.g. "CCERX"
    their_comp_id: str    # the broker's CompID, e.g. "BROKER01"


class FixMessage:
    """An ordered list of (tag, value) fields; values are str (decoded as latin-1)."""
    __slots__ = ("fields",)

    def __init__(self, fields: Optional[list[tuple[int, str]]] = None):
        self.fields: list[tuple[int, str]] = list(fields) if fields else []

    @classmethod
    def of(cls, msg_type: str, *fields: tuple[int, object]) -> "FixMessage":
        return cls([(35, msg_type)] + [(tag, str(value)) for tag, value in fields])

    @property
    def msg_type(self) -> Optional[str]:
        return self.get(35)

    def get(self, tag: int, default: Optional[str] = None) -> Optional[str]:
        for t, v in self.fields:
            if t == tag:
                return v
        return default

    def get_all(self, tag: int) -> list[str]:
        return [v for t, v in self.fields if t == tag]

    def append(self, tag: int, value: object) -> "FixMessage":
        self.fields.append((tag, str(value)))
        return self

    def set(self, tag: int, value: object) -> "FixMessage":
        """Replace the first occurrence of tag, or append it."""
        for i, (t, _) in enumerate(self.fields):
            if t == tag:
                self.fields[i] = (tag, str(value))
                return self
        return self.append(tag, value)

    def __contains__(self, tag: int) -> bool:
        return any(t == tag for t, _ in self.fields)

    def __iter__(self) -> Iterator[tuple[int, str]]:
        return iter(self.fields)

    def __eq__(self, other) -> bool:
        return isinstance(other, FixMessage) and self.fields == other.fields

    def __repr__(self) -> str:
        return "FixMessage(" + "|".join(f"{t}={v}" for t, v in redacted(self.fields)) + ")"


Outbound = tuple[SessionKey, FixMessage]


class Application(Protocol):
    def on_logon(self, session: SessionKey) -> list[Outbound]:
        """The session is logged on (after the logon handshake)."""

    def on_logout(self, session: SessionKey) -> list[Outbound]:
        """The session is logged out or its connection dropped."""

    def on_message(self, session: SessionKey, message: FixMessage) -> list[Outbound]:
        """A validated, in-sequence application message (header included) arrived.

        May raise gateway.fix.dictionary.SessionReject(reason, tag) to have the session
        answer with a session-level Reject (3); any other exception is logged and answered
        with BusinessMessageReject 380=4 (the session stays up)."""
