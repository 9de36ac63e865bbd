"""The console's login and action log through aiohttp's test client against the real Console
(a real in-memory exchange behind its FIX application): failed logins back off per operator
name and address without running scrypt, password checks run on one dedicated thread, the
CSRF token never reaches the action log, and the session cookie is Secure over HTTPS."""
from __future__ import annotations

import asyncio
import threading

import orjson
from aiohttp import DummyCookieJar
from aiohttp.test_utils import TestClient, TestServer

from ccerx.engine.core.exchange import Exchange
from ccerx.engine.formats.config import load_instruments
from ccerx.gateway.config import GatewayConfig, hash_password
from ccerx.gateway.console import auth
from ccerx.gateway.console.app import ACTION_LOG, LOGIN_COOKIE, Console
from ccerx.gateway.console.auth import COOKIE, Operator, Sessions
from ccerx.gateway.console.feed import ConsoleState
from ccerx.gateway.fix.translate import ExchangeApplication
from ccerx.gateway.limits import LogonBackoff

PASSWORD = "op-secret"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _console(tmp_path, clock, **kwargs) -> Console:
    config = GatewayConfig.demo()
    exchange = Exchange(load_instruments(None), config.build_accounts())
    application = ExchangeApplication(exchange, config.comp_id, config.brokers)
    sessions = Sessions({"alice": Operator("alice", hash_password(PASSWORD))})
    return Console(ConsoleState(exchange), application, lambda deliveries: None, sessions,
                   tmp_path, clock=clock, failed_login_delay=0.0, **kwargs)


def _run(console: Console, body):
    async def main():
        client = TestClient(TestServer(console.app(), host="127.0.0.1"),
                            cookie_jar=DummyCookieJar())
        await client.start_server()
        try:
            return await body(client)
        finally:
            await client.close()
            await console.stop()
    return asyncio.run(main())


async def _login(client, name, password, headers=None):
    return await client.post("/login", data={"csrf": "t", "name": name, "password": password},
                             headers={"Cookie": f"{LOGIN_COOKIE}=t", **(headers or {})},
                             allow_redirects=False)


def _count_checks(monkeypatch):
    """Count scrypt verifications (the real ones run) and the threads they ran on."""
    calls: list[str] = []
    real = auth.verify_password

    def counting(password, stored):
        calls.append(threading.current_thread().name)
        return real(password, stored)
    monkeypatch.setattr(auth, "verify_password", counting)
    return calls


def test_failed_logins_back_off_without_running_scrypt(tmp_path, monkeypatch):
    calls = _count_checks(monkeypatch)
    clock = Clock()
    console = _console(tmp_path, clock)

    async def body(client):
        statuses = [(await _login(client, "alice", f"guess{i}")).status for i in range(6)]
        # during the back-off even the right password is refused, unchecked
        during = (await _login(client, "alice", PASSWORD)).status
        checks_during = len(calls)
        clock.now += 3600.0
        after = await _login(client, "alice", PASSWORD)
        return statuses, during, checks_during, after.status
    statuses, during, checks_during, after = _run(console, body)
    assert statuses == [401] * 6 and during == 401
    # a first mistake is free, the second starts the wait: the four guesses after it and the
    # right password during it ran no scrypt
    assert checks_during == 2, calls
    assert after == 303 and len(calls) == 3


def test_parallel_guesses_back_off_too(tmp_path, monkeypatch):
    """Guesses sent at once are checked against the back-off in turn, not all before the first
    failure is recorded."""
    calls = _count_checks(monkeypatch)
    console = _console(tmp_path, Clock())

    async def body(client):
        responses = await asyncio.gather(*[_login(client, "alice", f"guess{i}")
                                           for i in range(10)])
        return [r.status for r in responses]
    assert _run(console, body) == [401] * 10
    assert len(calls) == 2, calls


def test_password_checks_run_on_one_dedicated_thread(tmp_path, monkeypatch):
    calls = _count_checks(monkeypatch)
    clock = Clock()
    console = _console(tmp_path, clock)
    console.backoff = LogonBackoff(0, 0)      # no back-off here: every guess is checked

    async def body(client):
        # parallel guessers: all checked, one after another on the one thread
        names = ["alice", "bob", "carol", "dave"]
        await asyncio.gather(*[_login(client, name, "wrong") for name in names])
        await _login(client, "alice", PASSWORD)
    _run(console, body)
    assert len(calls) == 5
    assert len(set(calls)) == 1 and calls[0].startswith("console-login"), calls


def test_the_csrf_token_is_never_written_to_the_action_log(tmp_path):
    console = _console(tmp_path, Clock())

    async def body(client):
        response = await _login(client, "alice", PASSWORD)
        cookie = response.cookies[COOKIE].value
        session = console.sessions.get(cookie)
        headers = {"Cookie": f"{COOKIE}={cookie}"}
        await client.post("/api/operator", data={"op": "status", "csrf": session.csrf},
                          headers=headers)
        await client.post("/api/operator", data=orjson.dumps({"op": "status",
                                                               "csrf": session.csrf}),
                          headers={**headers, "X-CSRF-Token": session.csrf})
        return session.csrf
    token = _run(console, body)
    log = (tmp_path / ACTION_LOG).read_text(encoding="utf-8")
    records = [orjson.loads(line) for line in log.splitlines()]
    assert len(records) == 3                       # the login and both requests
    assert token not in log and "csrf" not in log, log
    assert "op=status" in records[1]["request"]["raw"]
    assert records[2]["request"] == {"op": "status"}


def _set_cookies(response) -> list[str]:
    return response.headers.getall("Set-Cookie", [])


def test_the_session_cookie_is_secure_behind_an_https_proxy(tmp_path):
    async def body(client):
        plain = await _login(client, "alice", PASSWORD)
        proxied = await _login(client, "alice", PASSWORD, {"X-Forwarded-Proto": "https"})
        page = await client.get("/login", headers={"X-Forwarded-Proto": "https"})
        return _set_cookies(plain), _set_cookies(proxied), _set_cookies(page)
    plain, proxied, page = _run(_console(tmp_path, Clock()), body)
    session_cookie = [c for c in plain if c.startswith(COOKIE + "=")]
    assert session_cookie and "Secure" not in session_cookie[0]   # plain loopback: no HTTPS
    session_cookie = [c for c in proxied if c.startswith(COOKIE + "=")]
    assert session_cookie and "Secure" in session_cookie[0], proxied
    assert page and all("Secure" in c for c in page), page


def test_the_session_cookie_is_always_secure_off_loopback(tmp_path):
    async def body(client):
        return _set_cookies(await _login(client, "alice", PASSWORD))
    cookies = _run(_console(tmp_path, Clock(), secure_cookies=True), body)
    session_cookie = [c for c in cookies if c.startswith(COOKIE + "=")]
    assert session_cookie and "Secure" in session_cookie[0], cookies


def test_serve_console_off_loopback_sets_secure_cookies(tmp_path):
    from ccerx.gateway.console.app import ConsoleSetup
    operators = tmp_path / "operators.toml"
    operators.write_text(f'[[operator]]\nname = "alice"\npassword = "{hash_password(PASSWORD)}"\n',
                         encoding="utf-8")
    off = ConsoleSetup.from_args("0.0.0.0:0", str(operators), True)
    on = ConsoleSetup.from_args("127.0.0.1:0", str(operators), False)
    assert off.secure_cookies and not on.secure_cookies
