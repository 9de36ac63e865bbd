"""The console's aiohttp application, started and stopped inside `ccerx serve`'s event loop.

Routes (every one but /login needs a session; every POST its CSRF token):
    GET  /login, POST /login, POST /logout
    GET  / /book[/SYMBOL] /tape /alerts /accounts /control        pages (pages.py)
    GET  /events                                                  server-sent events
    GET  /api/state /api/book/SYMBOL[?levels=all] /api/tape /api/accounts /api/cases
         /api/notices (risk notices: large holders, limits, restrictions, since the start)
    POST /api/operator      one control-socket request: {"op":"status"|"eod"|"deposit"|
                            "restrict"|"unrestrict"|"kill"|"limits",...}
    POST /api/cases/ID      {"action":"review"|"close"|"reopen","note":...}
"""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import orjson
from aiohttp import web

from ccerx.engine.core.types import format_fen
from ccerx.engine.durable.files import open_private
from ccerx.engine.surveillance.cases import CaseError
from ccerx.gateway.addresses import is_loopback, split_host_port
from ccerx.gateway.console import pages
from ccerx.gateway.console.auth import COOKIE, Sessions, same_token
from ccerx.gateway.console.feed import ConsoleState
from ccerx.gateway.control import ControlServer, Query, Refused, handle_line, query, refusal
from ccerx.gateway.limits import (DEFAULT_LOGON_BACKOFF_MAX_MS, DEFAULT_LOGON_BACKOFF_MS,
                                  LogonBackoff)

log = logging.getLogger("gateway.console")
LOGIN_COOKIE = "ccerx_login"
FAILED_LOGIN_DELAY_S = 1.0
MAX_BODY = 64 * 1024
HEARTBEAT_S = 15.0
ACTION_LOG = "console-actions.ndjson"     # in the data directory; read by `ccerx audit export`


class Console:
    """The web console of one exchange application (see the package docstring)."""

    def __init__(self, state: ConsoleState, application, deliver, sessions: Sessions,
                 data_dir: Path, engine=None, clock=time.monotonic,
                 failed_login_delay: float = FAILED_LOGIN_DELAY_S, secure_cookies: bool = False):
        self.clock = clock
        self.failed_login_delay = failed_login_delay
        # Cookies carry `Secure` when the console is bound off loopback (it then runs only
        # with --insecure-plaintext, i.e. behind a TLS-terminating proxy, so browsers reach it
        # over HTTPS) and, on loopback, for a request that came over HTTPS: directly, or via a
        # proxy on this machine saying so in X-Forwarded-Proto (see _secure)
        self.secure_cookies = secure_cookies
        # the gateway's logon back-off, here per (operator name, address): a login during the
        # wait is refused without a password check
        self.backoff = LogonBackoff(DEFAULT_LOGON_BACKOFF_MS / 1000,
                                    DEFAULT_LOGON_BACKOFF_MAX_MS / 1000)
        # scrypt (~50 ms, a core while it runs) on one thread of its own: parallel guessers
        # queue behind each other instead of taking every core from the FIX sessions
        self.password_checker = ThreadPoolExecutor(max_workers=1,
                                                   thread_name_prefix="console-login")
        self.login_turn = asyncio.Lock()
        self.state = state
        self.exchange = application.exchange
        self.engine = engine
        # the control socket's own request handling, without its socket: the same checks,
        # the same journaled commands, the same answers
        self.control = ControlServer(Path(data_dir) / "console.unused", application, deliver)
        self.sessions = sessions
        self.action_log = Path(data_dir) / ACTION_LOG
        self.runner: Optional[web.AppRunner] = None
        self.url = ""
        self.stopping = asyncio.Event()

    # ---------------------------------------------------------------- lifecycle
    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._guard])
        get, post = app.router.add_get, app.router.add_post
        get("/login", self.login_page)
        get("/favicon.ico", self.no_icon)
        post("/login", self.login)
        post("/logout", self.logout)
        for path in pages.PAGES:
            get(path, self.page)
        get("/book/{symbol}", self.page)
        get("/events", self.events)
        get("/api/state", self.api_state)
        get("/api/book/{symbol}", self.api_book)
        get("/api/tape", self.api_tape)
        get("/api/accounts", self.api_accounts)
        get("/api/cases", self.api_cases)
        get("/api/notices", self.api_notices)
        post("/api/operator", self.api_operator)
        post("/api/cases/{alert_id}", self.api_case)
        return app

    async def start(self, host: str, port: int) -> str:
        self.runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port)
        await site.start()
        bound = self.runner.addresses[0]
        self.url = f"http://{bound[0]}:{bound[1]}"
        return self.url

    async def stop(self) -> None:
        self.stopping.set()
        for queue in list(self.state.clients):
            self.state.unsubscribe(queue)
            if not queue.full():
                queue.put_nowait(None)
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        self.password_checker.shutdown(wait=False, cancel_futures=True)

    # ---------------------------------------------------------------- access
    @web.middleware
    async def _guard(self, request: web.Request, handler):
        """Sessions for everything but the login page; the CSRF token for every POST;
        headers that keep the pages out of frames and caches."""
        if request.path not in ("/login", "/favicon.ico"):
            session = self.sessions.get(request.cookies.get(COOKIE))
            if session is None:
                if request.path.startswith("/api/") or request.path == "/events":
                    return _json({"ok": False, "error": "not logged in"}, status=401)
                raise web.HTTPSeeOther("/login")
            request["session"] = session
            if request.method == "POST":
                token = request.headers.get("X-CSRF-Token")
                if token is None and request.content_type == "application/x-www-form-urlencoded":
                    token = (await _form(request)).get("csrf")
                if not same_token(token, session.csrf):
                    return _json({"ok": False, "error": "missing or wrong CSRF token"}, status=403)
        response = await handler(request)
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    async def login_page(self, request: web.Request) -> web.Response:
        # the token already given, if any: a second tab (or the browser's own favicon
        # request landing here) must not invalidate the form the first one shows
        token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
        response = _html(pages.login(token=token))
        response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="Strict", path="/login",
                            secure=self._secure(request))
        return response

    def _secure(self, request: web.Request) -> bool:
        """Whether cookies set for this request carry `Secure`: always off loopback; on
        loopback when the request came over TLS, or from a proxy on this machine that says
        it did (X-Forwarded-Proto: https; a header from anyone else is not believed)."""
        if self.secure_cookies or request.secure:
            return True
        forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        return forwarded == "https" and is_loopback(request.remote)

    async def no_icon(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def login(self, request: web.Request) -> web.Response:
        form = await _form(request)
        expected = request.cookies.get(LOGIN_COOKIE)
        if not expected or not same_token(form.get("csrf"), expected):
            return _json({"ok": False, "error": "missing or wrong CSRF token"}, status=403)
        name, password = form.get("name", ""), form.get("password", "")
        name_key, address = name[:64], request.remote or ""
        # one login at a time from the back-off check to the failure recorded, so guesses sent
        # at once meet the back-off the earlier ones started (a refusal unchecked is quick)
        async with self.login_turn:
            operator = await self._check_login(name_key, address, name, password)
        if operator is False:
            # backing off: refused after the short delay, without running scrypt
            log.warning("console: login for %r from %s refused unchecked (backing off after "
                        "failed logins)", name_key, address)
            return await self._refuse_login(request, "登录失败次数过多，请稍后再试 Too many "
                                                     "failed logins: try again later")
        if operator is None:
            log.warning("console: failed login for %r from %s", name_key, address)
            return await self._refuse_login(request, "用户名或密码错误 Wrong name or password")
        log.warning("console: %s logged in from %s", operator.name, request.remote)
        self._record(operator.name, {"action": "login"}, {"ok": True})
        response = web.HTTPSeeOther("/")
        response.set_cookie(COOKIE, self.sessions.open(operator), httponly=True,
                            samesite="Strict", path="/", secure=self._secure(request))
        response.del_cookie(LOGIN_COOKIE, path="/login")
        raise response

    async def _check_login(self, name_key: str, address: str, name: str, password: str):
        """The operator; None for a wrong name or password; False, unchecked, while this name
        and address back off."""
        if self.backoff.wait(name_key, address, self.clock()) > 0:
            return False
        loop = asyncio.get_running_loop()
        # scrypt takes ~50 ms: off the event loop, so FIX traffic does not wait for it, and on
        # the console's one login thread, so parallel guessers do not take every core
        operator = await loop.run_in_executor(self.password_checker,
                                              self.sessions.check_password, name, password)
        if operator is None:
            self.backoff.failed(name_key, address, self.clock())
        else:
            self.backoff.succeeded(name_key, address)
        return operator

    async def _refuse_login(self, request: web.Request, text: str) -> web.Response:
        await asyncio.sleep(self.failed_login_delay)
        token = secrets.token_urlsafe(24)
        response = _html(pages.login(text, token), status=401)
        response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="Strict",
                            path="/login", secure=self._secure(request))
        return response

    async def logout(self, request: web.Request) -> web.Response:
        self.sessions.close(request.cookies.get(COOKIE))
        response = web.HTTPSeeOther("/login")
        response.del_cookie(COOKIE, path="/")
        raise response

    # ---------------------------------------------------------------- pages
    async def page(self, request: web.Request) -> web.Response:
        path = "/book" if request.path.startswith("/book") else request.path
        title_zh, title_en, body, script = pages.PAGES[path]
        session = request["session"]
        operator = session.operator.display or session.operator.name
        return _html(pages.page(title_zh, title_en, body, path=path, operator=operator,
                                csrf=session.csrf, script=script))

    async def events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-store",
                                               "X-Accel-Buffering": "no"})
        await response.prepare(request)
        queue = self.state.subscribe()
        try:
            await response.write(b": connected\n\n")
            while not self.stopping.is_set() and queue in self.state.clients:
                try:
                    message = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
                except asyncio.TimeoutError:
                    await response.write(b": heartbeat\n\n")
                    continue
                if message is None:
                    break
                await response.write(b"data: " + orjson.dumps(message) + b"\n\n")
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.state.unsubscribe(queue)
        return response

    # ---------------------------------------------------------------- reads
    async def api_state(self, request: web.Request) -> web.Response:
        return _json(self.state.market())

    async def api_book(self, request: web.Request) -> web.Response:
        symbol = request.match_info["symbol"]
        if symbol not in self.exchange.books:
            return _json({"ok": False, "error": f"unknown instrument {symbol[:40]!r}"}, status=404)
        levels = None if request.query.get("levels") == "all" else 5
        return _json(self.state.book(symbol, levels))

    async def api_tape(self, request: web.Request) -> web.Response:
        return _json(list(self.state.tape))

    async def api_accounts(self, request: web.Request) -> web.Response:
        accounts = self.exchange.accounts
        rows = []
        for account in sorted(accounts.by_id.values() if accounts is not None else (),
                              key=lambda a: (a.member or "", a.account)):
            row = account.to_json()
            row["cash_available"] = format_fen(account.cash_available)
            restrictions = self.exchange.restrictions
            row["restricted"] = restrictions.get(("account", account.account))
            row["member_restricted"] = restrictions.get(("member", account.member))
            per, total = accounts.limits.get(account.participant_type, (None, None))
            row["limit"] = ({"per_instrument": per, "total": total}
                            if per is not None or total is not None else None)
            rows.append(row)
        return _json(rows)

    async def api_notices(self, request: web.Request) -> web.Response:
        return _json(list(self.state.notices))

    async def api_cases(self, request: web.Request) -> web.Response:
        store = self.state.case_store
        if store is None:
            return _json([{**a.to_json(), "state": "open", "note": ""} for a in self.state.alerts])
        out = []
        for case in store.cases():
            alert = store.case(case["id"])["alert"]
            out.append({**alert, "state": case["state"], "note": case["note"]})
        return _json(out)

    # ---------------------------------------------------------------- actions
    async def api_operator(self, request: web.Request) -> web.Response:
        operator = request["session"].operator.name
        body = await request.read()
        if b"\n" in body.strip():
            return _json({"ok": False, "error": "one request at a time"}, status=400)
        item = handle_line(body, self.control.clock)
        if type(item) is Refused:
            response = {"ok": False, "error": item.error}
        else:
            if (type(item).__name__ in ("Deposit", "Restrict", "SetLimits")
                    and item.owner is None):
                item = item._replace(owner=f"console:{operator}")
            response = orjson.loads(self._respond(item))
        self._record(operator, _loggable(body, request["session"].csrf), response)
        return _json(response, status=200 if response.get("ok") or response.get("applied")
                     else 400)

    def _respond(self, item) -> bytes:
        """ControlServer.respond for an item already parsed (a Query or a command): the same
        execute() the socket runs, the same answers."""
        if type(item) is Query:
            try:
                if self.control.commit is not None:
                    self.control.commit()
                return orjson.dumps(query(item, self.exchange))
            except Exception as err:
                log.exception("console query %r failed", item)
                return orjson.dumps(refusal(f"internal error: {err}"))
        try:
            return orjson.dumps(self.control.execute(item))
        except Exception as err:
            log.exception("console operator command %r failed", item)
            return orjson.dumps(refusal(f"internal error, the command may not have been "
                                        f"applied: {err}"))

    async def api_case(self, request: web.Request) -> web.Response:
        operator = request["session"].operator.name
        store = self.state.case_store
        body = None
        try:
            body = orjson.loads(await request.read())
            if not isinstance(body, dict):
                raise CaseError("send a JSON object {\"action\": ..., \"note\": ...}")
            action, note = body.get("action"), body.get("note", "")
            if action not in ("review", "close", "reopen") or not isinstance(note, str):
                raise CaseError("action is review, close or reopen, with a text note")
            if store is None:
                raise CaseError("this server keeps no case store")
            case = store.act(request.match_info["alert_id"], action, operator, note)
            response = {"ok": True, "state": case["state"]}
        except (CaseError, orjson.JSONDecodeError) as err:
            response = {"ok": False, "error": str(err)}
        self._record(operator, {"case": request.match_info["alert_id"], "body": body}, response)
        return _json(response, status=200 if response["ok"] else 400)

    def _record(self, operator: str, request: dict, response: dict) -> None:
        """Who did what, when, and how it ended: the console's action log (0600, appended,
        fsynced), since the journal's operator commands carry no operator name."""
        # event_seqs: the engine events the action made (`ccerx audit export` names the
        # operator on those rows)
        line = orjson.dumps({"ts": time.time_ns(), "operator": operator, "request": request,
                             "ok": response.get("ok"), "applied": response.get("applied"),
                             "error": response.get("error"),
                             "event_seqs": [e["seq"] for e in response.get("events", ())
                                            if isinstance(e, dict) and "seq" in e]}) + b"\n"
        try:
            fd = open_private(self.action_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            log.exception("console: cannot write the action log %s", self.action_log)


def _loggable(body: bytes, csrf: str) -> dict:
    """A request as the action log keeps it: without the session's CSRF token (a form's or a
    JSON object's csrf field is dropped, and the token is cut out of anything else)."""
    if _is_json(body):
        request = orjson.loads(body)
        request.pop("csrf", None)
        return request
    text = body.decode("utf-8", "replace")
    fields = urllib.parse.parse_qsl(text, keep_blank_values=True)
    if fields and "=" in text:
        text = urllib.parse.urlencode([(k, v) for k, v in fields if k != "csrf"])
    if csrf:
        text = text.replace(csrf, "")
    return {"raw": text[:200]}


def _is_json(body: bytes) -> bool:
    try:
        return isinstance(orjson.loads(body), dict)
    except orjson.JSONDecodeError:
        return False


async def _form(request: web.Request) -> dict:
    """An urlencoded form (no multipart: the console sends none), first value of each field."""
    if "form" not in request:
        body = await request.read()
        parsed = urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        request["form"] = {key: values[0] for key, values in parsed.items()}
    return request["form"]


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, content_type="text/html", charset="utf-8", status=status)


def _json(value, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(value), content_type="application/json",
                        status=status)


class ConsoleSetup:
    """What `ccerx serve --console` needs, in the order serve has it: the address and the
    operators (checked before anything starts), the engine to observe (before the FIX
    application takes its apply methods), then the application to start the web server for."""

    def __init__(self, host: str, port: int, sessions: Sessions, surveillance_config=None,
                 related=None, secure_cookies: bool = False):
        self.host, self.port, self.sessions = host, port, sessions
        # off loopback (only with --insecure-plaintext, behind a TLS-terminating proxy):
        # the cookies are always Secure
        self.secure_cookies = secure_cookies
        self.surveillance_config, self.related = surveillance_config, related
        self.state: Optional[ConsoleState] = None
        self.engine = None
        self.data_dir: Optional[Path] = None
        self.console: Optional[Console] = None
        self.url = ""

    @classmethod
    def from_args(cls, address: str, operators_path: Optional[str], insecure: bool,
                  surveillance_path: Optional[str] = None,
                  related_path: Optional[str] = None) -> "ConsoleSetup":
        """Raises ValueError saying what is wrong with --console, --console-operators and the
        live surveillance's settings and related-accounts files."""
        from ccerx.engine.surveillance.config import load_config
        from ccerx.engine.surveillance.relations import load_relations
        from ccerx.gateway.console.auth import load_operators
        host_port = split_host_port(address)
        if host_port is None:
            raise ValueError(f"--console {address!r}: give HOST:PORT, e.g. 127.0.0.1:8080")
        host, port = host_port
        if not is_loopback(host) and not insecure:
            raise ValueError(f"refusing to serve the console on {host} without TLS: operator "
                             f"passwords and session cookies would cross the network in clear. "
                             f"Listen on 127.0.0.1 (an SSH tunnel reaches it), or pass "
                             f"--insecure-plaintext behind a TLS-terminating proxy")
        if operators_path is None:
            raise ValueError("--console needs --console-operators FILE.toml: [[operator]] "
                             "name = \"...\", password = \"<hash from `ccerx hash-password`>\"")
        return cls(host, port, Sessions(load_operators(operators_path)),
                   load_config(surveillance_path), load_relations(related_path),
                   secure_cookies=not is_loopback(host))

    def observe(self, engine, data_dir: Path) -> None:
        from ccerx.engine.durable.files import private_dir
        from ccerx.engine.surveillance.cases import CaseStore
        from ccerx.gateway.console.feed import observe
        self.engine, self.data_dir = engine, Path(data_dir)
        store = CaseStore(private_dir(self.data_dir / "surveillance") / "cases.sqlite",
                          time.time_ns)
        self.state = ConsoleState(engine, store, self.surveillance_config, self.related)
        observe(engine, self.state.publish)

    async def start(self, application, deliver) -> str:
        self.console = Console(self.state, application, deliver, self.sessions, self.data_dir,
                               self.engine, secure_cookies=self.secure_cookies)
        self.url = await self.console.start(self.host, self.port)
        return self.url

    async def stop(self) -> None:
        if self.console is not None:
            await self.console.stop()
        if self.state is not None and self.state.case_store is not None:
            self.state.case_store.close()
