"""The application QuickFIX's acceptance tests expect behind the ISLD/TW44 session.

NewOrderSingle (D) and SecurityDefinition (d) are echoed back (body in QuickFIX's field
order, header extras such as PossResend kept); a NewOrderSingle with PossResend=Y whose
ClOrdID was already seen on that session since its logon is ignored; anything else gets a
BusinessMessageReject "Unsupported Message Type" (380=3).
"""
from __future__ import annotations

from ccerx.gateway.fix.application import FixMessage, Outbound, SessionKey
from ccerx.gateway.fix.codec import SESSION_OWNED_HEADER
from ccerx.gateway.fix.dictionary import HEADER_TAGS, TRAILER_TAGS, canonical_body


class EchoApplication:
    def __init__(self):
        self._seen: set[tuple[str, SessionKey]] = set()

    def on_logon(self, session: SessionKey) -> list[Outbound]:
        # the conformance session resets its sequence numbers on every logon: a new day
        self._seen = {seen for seen in self._seen if seen[1] != session}
        return []

    def on_logout(self, session: SessionKey) -> list[Outbound]:
        return []

    def on_message(self, session: SessionKey, message: FixMessage) -> list[Outbound]:
        msg_type = message.msg_type
        if msg_type not in ("D", "d"):
            return [(session, FixMessage.of("j", (45, message.get(34)), (58, "Unsupported Message Type"),
                                            (372, msg_type), (380, 3)))]
        if msg_type == "D":
            seen = (message.get(11), session)
            if message.get(97) == "Y" and seen in self._seen:
                return []
            self._seen.add(seen)
        header = [(t, v) for t, v in message if t in HEADER_TAGS and t not in SESSION_OWNED_HEADER]
        body = [(t, v) for t, v in message if t not in HEADER_TAGS and t not in TRAILER_TAGS]
        return [(session, FixMessage([(35, msg_type)] + header + canonical_body(msg_type, body)))]
