"""The asyncio TCP transport of the FIX gateway (API first; the transport lands next).

Public API the application side codes against (kept stable):

    SessionSettings(key, application, heartbeat_interval=30, reset_on_logon=False, authenticate=None)
    server = GatewayServer(host, port, sessions, store_dir=None, max_message_size=...)
    await server.start(); server.port; await server.serve_forever(); await server.stop()
    server.deliver([(SessionKey, FixMessage), ...])
    conformance_session() -> SessionSettings   # ISLD/TW44 on the echo application
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from gateway.fix.application import Application, FixMessage, Outbound, SessionKey

DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024

# authenticate(key, logon) -> None when the Logon is acceptable, else the text of the Logout.
Authenticator = Callable[[SessionKey, FixMessage], Optional[str]]


@dataclass
class SessionSettings:
    key: SessionKey
    application: Application
    heartbeat_interval: int = 30
    reset_on_logon: bool = False
    authenticate: Optional[Authenticator] = None


class GatewayServer:
    def __init__(self, host: str, port: int, sessions: list[SessionSettings],
                 store_dir: Optional[Path] = None,
                 max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE):
        raise NotImplementedError("transport lands in the next commit")

    async def start(self) -> None: ...
    async def serve_forever(self) -> None: ...
    async def stop(self) -> None: ...
    def deliver(self, outbound: list[Outbound]) -> None: ...


def conformance_session() -> SessionSettings:
    """The QuickFIX acceptance-test session: acceptor ISLD, initiator TW44, echo application."""
    from gateway.fix.echo import EchoApplication
    return SessionSettings(key=SessionKey("FIX.4.4", "ISLD", "TW44"), application=EchoApplication(),
                           heartbeat_interval=30, reset_on_logon=True)
