"""The operator console: `ccerx serve --console 127.0.0.1:8080`, the market in a browser.

Theory of operation. The console is an aiohttp application in the server's own event loop, so
everything it does is serialised with FIX traffic exactly as the control socket's requests
are. It reads the exchange directly (market state, books, accounts) and learns what happens
from the engine's events, which `feed.observe` hands it once they are durable (after the
durable engine's commit, the same moment brokers are told). Live pages update by server-sent
events (`/events`). Every action (halt, resume, close of day, deposit) is one line in the
control socket's protocol, answered by the same `ControlServer.respond` (gateway/control.py)
the socket uses, so it is journaled, told to the brokers and answered the same way; the
console adds who did it (its action log, and a deposit's owner).

Access: operators log in with a name and password whose salted hashes sit in an operators
file (`--console-operators FILE.toml`, `[[operator]] name = ..., password = "scrypt$..."`, made
with `ccerx hash-password`); a session is an unguessable HttpOnly, SameSite=Strict cookie, and
every action also needs the session's CSRF token. The console listens on loopback only unless
--insecure-plaintext is given.

    auth.py     operators file, password check, sessions and CSRF tokens
    feed.py     the engine's durable events to the console (tape, live surveillance, SSE)
    pages.py    the HTML pages (Chinese and English labels; no build step, plain JS)
    app.py      the aiohttp application and its start/stop inside `ccerx serve`
"""
