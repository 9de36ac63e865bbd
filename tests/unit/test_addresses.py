"""One home for 'is this address loopback?' and HOST:PORT text (serve, console, ledger)."""
from __future__ import annotations

import pytest

from ccerx.gateway.addresses import is_loopback, split_host_port


@pytest.mark.parametrize("host,expected", [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("::1%lo", True),
    ("localhost", True), ("LOCALHOST.", True),
    ("0.0.0.0", False), ("::", False), ("10.0.0.1", False), ("", False), (None, False),
    ("exchange.example", False), ("localhost.example", False),
])
def test_loopback_means_nobody_off_this_machine_reaches_it(host, expected):
    assert is_loopback(host) is expected


@pytest.mark.parametrize("text,expected", [
    ("127.0.0.1:8080", ("127.0.0.1", 8080)), ("[::1]:1883", ("::1", 1883)),
    ("broker.example:0", ("broker.example", 0)), ("h:65535", ("h", 65535)),
    ("127.0.0.1", None), (":8080", None), ("h:", None), ("h:65536", None),
    ("h:-1", None), ("h:８０", None), ("h:80a", None),
])
def test_host_port_text(text, expected):
    assert split_host_port(text) == expected
