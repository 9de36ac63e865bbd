"""Listening addresses: whether one is reachable from off this machine, and HOST:PORT text.

One home for both, used by `ccerx serve` (FIX over plain TCP only on loopback), the operator
console (loopback unless --insecure-plaintext; a loopback proxy's X-Forwarded-Proto) and the
command-line options that name a broker or a server."""
from __future__ import annotations

import ipaddress
from typing import Optional


def is_loopback(host: Optional[str]) -> bool:
    """True for a loopback address (an IPv6 scope suffix allowed) or `localhost`: a listener
    nobody off this machine reaches. Any other name counts as reachable (what it resolves to
    may change)."""
    host = host or ""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def split_host_port(text: str) -> Optional[tuple[str, int]]:
    """'HOST:PORT' (IPv6 in brackets: '[::1]:8080') -> (host, port), or None if it is not one
    (no host, a port that is not 0-65535 in ASCII digits)."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        return None
    return host, int(port)
