"""The operator's control channel of `ccerx serve`: close the day, halt, deposit, list, retire.

Theory of operation. Beside the FIX gateway, `ccerx serve` listens on a Unix-domain socket
whose file is mode 0600: whoever can open that file is the operator (there is no other
authentication), and nothing else can reach it. The protocol is NDJSON: each request is one
line holding an operator command in the form `ccerx replay` reads, and each line gets exactly
one response line, in order:

    {"op":"eod"}                                  -> {"ok":true,"events":[{"type":"cancelled",...},
                                                                           {"type":"day_closed",...}, ...]}
    {"op":"status","open":false,"halt":true}      -> {"ok":true,"events":[{"type":"status",...}]}
    {"op":"deposit","deposit_id":"F-1","account":"EMIT01","cash":"1000000.00"}
                                                  -> {"ok":true,"events":[{"type":"deposited",...}]}
    {"op":"state"}                                -> {"ok":true,"state":{"trading_open":true,...}}
    {"op":"accounts"}                             -> {"ok":true,"accounts":{"EMIT01":{"cash":...}}}
    {"op":"restrict","account":"EMIT01","side":"buy"}   (side buy|sell|both; or "member":"BROKER01")
    {"op":"unrestrict","member":"BROKER01"}
    {"op":"kill","member":"BROKER01"}             -> {"ok":true,"events":[{"type":"restriction",...},
                                                                           {"type":"cancelled","reason":"kill",...}]}
    {"op":"limits","limits":{"key_emission_unit":{"per_instrument":500000,"total":1000000}},"report_pct":"50"}
    {"op":"deposit","deposit_id":"ISS-7","account":"HOLD01","credit_type":"afforestation",
     "project":"CCER-14-2024-0001","vintage":2023,"qty":50000}        (a lot; optionally
     "list":{"symbol":"AFF-0001-2023","ref_price":"62.00"} lists it on its first transfer in)
    {"op":"list","symbol":"AFF-0001-2023","credit_type":"afforestation",
     "project":"CCER-14-2024-0001","vintage":2023,"ref_price":"62.00"}   (optional: name,
                                                  tick, lot, max_qty, band_pct)
                                                  -> {"ok":true,"events":[{"type":"instrument",
                                                      ...,"tradable_from":1}]}
    {"op":"retire","retire_id":"R-1","account":"EMIT01","project":"CCER-14-2024-0001",
     "vintage":2023,"qty":100,"purpose":"2024年度清缴抵销"}   (or "instrument" for a pooled
                                                  holding) -> {"ok":true,"events":[{"type":
                                                  "retired",...,"certificate":"CCERX-RC-00000001"}]}
    {"op":"dispute","trade_id":17,"note":"..."}   -> {"ok":true,"dispute":{"trade_id":17,
                                                      "batch_id":"CCERX-C20261204-1",...}}
    {"op":"new",...}                              -> {"ok":false,"error":"op 'new' is not ..."}

`list` (Art.17) defines a listing of one lot (project and vintage) with its declared initial
price as its first benchmark: the engine's DefineInstrument, journaled as the `instrument`
line `ccerx replay` reads; under cbeex-2023 it trades from the next trading day (its
`tradable_from`). A lot may also be listed on its first transfer in (`deposit` with `list`).
`retire` (注销) retires an account's free credits of one lot for good; the answer holds the
retirement certificate id. Neither is told to brokers over FIX (retirement stays off FIX);
brokers see a new listing in the next SecurityList (y).

A dispute (Art.32, day-end clearing under cbeex-2023) is recorded in the ledger of record, not
applied to the engine: a flag on a trade cleared at the close, shown in the statements, and
logged here (the audit trail). It is accepted while the trade is pending or was delivered by
the latest clearing batch and the next trading day has not begun (no trade or batch since);
it does not hold the delivery back or reverse it (reversal is not built).

Only operator commands and the read-only `state` query are accepted: orders come over FIX only. A refused line changes
nothing. An accepted command without a `ts` is stamped with the server's clock (the engine
reads no clock; the trading calendar stamps its commands the same way), then applied through
the exchange application in the event loop, so it is serialised with FIX traffic and brokers
are told what it did to them (expiries, TradingSessionStatus) exactly as when the calendar
acts. It is made durable (the durable engine's commit) before its response is written, and
its response holds the engine's events; `ok` is false when one of them is a reject. If
something fails after the engine applied it (making it durable, telling the brokers), the
answer says so instead of "internal error": `{"ok":false,"applied":true,"events":[...],
"error":"the command was applied, but ... failed: ..."}`, so a halt is not retried blindly.

Layers, as for FIX: `LineSplitter` (bytes in, lines out, an over-long line refused without
being buffered) and `handle_line` (a line in, a command or a `Refused` out) are sans-IO and
tested without a socket; `ControlServer` only moves bytes, applies back-pressure (it stops
reading from a client that does not read its responses) and calls them. A client's bytes can
end its own connection, never the server. `operator_request` is the client.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import stat
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, NamedTuple, Optional, Union

import orjson

from ccerx.engine.core.commands import (DefineInstrument, Deposit, EndOfDay, Malformed, Restrict,
                                       Retire, SetLimits, SetTradingStatus)
from ccerx.engine.core.events import DepositRejected, OrderRejected
from ccerx.engine.durable.replicated import NotLeader
from ccerx.engine.ledger.base import LedgerRejected
from ccerx.engine.core.lots import lot_problem
from ccerx.engine.core.types import InstrumentSpec
from ccerx.engine.formats.ndjson import event_to_dict, market_state, parse_command

log = logging.getLogger("gateway.control")

SOCKET_NAME = "control.sock"        # default: <data dir>/control.sock
MAX_LINE = 64 * 1024                # a request line longer than this is refused
READ_CHUNK = 64 * 1024
OPERATOR_OPS = {"eod": EndOfDay, "status": SetTradingStatus, "deposit": Deposit,  # op -> type
                "limits": SetLimits, "restrict": Restrict, "unrestrict": Restrict,
                "kill": Restrict, "retire": Retire, "list": DefineInstrument}
QUERY_OPS = ("state", "accounts")   # read-only: answered from the engine, nothing applied
LEDGER_OPS = ("dispute",)           # recorded in the ledger of record, not in the engine
_ALLOWED = ", ".join([*OPERATOR_OPS, *QUERY_OPS][:-1]) + " or " + QUERY_OPS[-1]
MAX_NOTE = 1000                     # characters of a dispute's note
# `list`: the lot and the declared initial price are required, the rest as `instrument` has it
LISTING_REQUIRED = ("symbol", "credit_type", "project", "vintage", "ref_price")
LISTING_OPTIONAL = ("name", "tick", "lot", "max_qty", "band_pct")


class Dispute(NamedTuple):
    """`{"op":"dispute","trade_id":N,"note":"..."}`: recorded in the ledger (see above)."""
    trade_id: int
    note: str
    ts: int


def _dispute(request: dict, clock: Callable[[], int]):
    extra = sorted(set(request) - {"op", "trade_id", "note"})
    if extra:
        return Refused(f"dispute takes trade_id and note, not {extra}")
    trade_id, note = request.get("trade_id"), request.get("note")
    if type(trade_id) is not int or trade_id < 1:
        return Refused(f"dispute: trade_id must be a positive integer, not {_short(trade_id)}")
    if type(note) is not str or not note.strip() or len(note) > MAX_NOTE:
        return Refused(f"dispute: note must be text of 1 to {MAX_NOTE} characters saying why")
    return Dispute(trade_id, note, clock())


class Query(NamedTuple):
    """A read-only request (`{"op":"state"}`): answered, never journaled."""
    op: str
CLIENT_TIMEOUT = 60.0               # seconds operator_request waits for all its answers
MAX_SUN_PATH = 107                  # bytes of a socket path in sockaddr_un (Linux), less the NUL


@contextmanager
def short_address(path: str):
    """An address for the socket file `path` that fits sockaddr_un: the path itself, or, when
    it is too long (a deep data directory), the same file reached through /proc/self/fd of
    its open parent directory (Linux), valid while the context lasts."""
    if len(os.fsencode(path)) <= MAX_SUN_PATH:
        yield path
        return
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{os.path.basename(path)}"
    finally:
        os.close(fd)


class Refused(NamedTuple):
    """A request line that is not applied; the response is {"ok": false, "error": error}."""
    error: str


# ------------------------------------------------------------------ sans-IO protocol
class LineSplitter:
    """Bytes in, request lines out (without their newline), in order.

    A line longer than max_line bytes becomes a `Refused` as soon as it passes the limit;
    the rest of it, up to its newline, is discarded as it arrives, so a client never makes
    the server hold more than max_line bytes of one line. Bytes after the last newline at
    the end of input are an incomplete request and are never applied (`finish`)."""
    __slots__ = ("max_line", "_buffer", "_discarding")

    def __init__(self, max_line: int = MAX_LINE):
        self.max_line = max_line
        self._buffer = bytearray()
        self._discarding = False    # inside a line already refused as too long

    def feed(self, data: bytes) -> list[Union[bytes, Refused]]:
        buffer = self._buffer
        buffer += data
        out: list[Union[bytes, Refused]] = []
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            if self._discarding:
                self._discarding = False
            elif end - start > self.max_line:
                out.append(self._too_long())
            else:
                out.append(bytes(buffer[start:end]))
            start = end + 1
        del buffer[:start]
        if self._discarding:
            buffer.clear()
        elif len(buffer) > self.max_line:
            out.append(self._too_long())
            self._discarding = True
            buffer.clear()
        return out

    def finish(self) -> list[Refused]:
        """End of input: an unterminated request is refused, not applied."""
        pending = bytes(self._buffer).strip()
        self._buffer.clear()
        if pending and not self._discarding:
            return [Refused("incomplete request at end of input (no newline): not applied")]
        return []

    def _too_long(self) -> Refused:
        return Refused(f"request line longer than {self.max_line} bytes: not applied")


def handle_line(line: bytes, clock: Callable[[], int] = time.time_ns):
    """One request line -> the operator command to apply, stamped with clock(), a read-only
    Query, or Refused with the reason. Never raises; changes nothing. A request may not carry its own `ts`: the
    server's clock dates what the operator does (a close stamped in 2099, or a deposit dated
    into a day whose statements are written, would corrupt the calendar and the books)."""
    if not line.strip():
        return Refused("empty request line")
    try:
        request = orjson.loads(line)
    except orjson.JSONDecodeError:
        return Refused("not valid JSON: send one JSON object per line")
    if type(request) is not dict:
        return Refused("not a JSON object: send one JSON object per line")
    op = request.get("op")
    if op in QUERY_OPS:
        extra = sorted(set(request) - {"op"})
        return Refused(f"{op} takes no fields, not {extra}") if extra else Query(op)
    if op == "dispute":
        return _dispute(request, clock)
    if type(op) is not str or op not in OPERATOR_OPS:
        return Refused(f"op {_short(op)} is not an operator command: expected {_ALLOWED} "
                       "(orders come over FIX only)")
    if "ts" in request:
        return Refused("ts is set by the server's clock; leave it out")
    if op == "list":
        return _listing(request, clock)
    command = parse_command(line)
    if type(command) is Malformed:
        return Refused(command.text)
    if type(command) is not OPERATOR_OPS[op]:
        raise AssertionError(f"parse_command made {type(command).__name__} of op {op!r}")
    return command._replace(ts=clock())


def _listing(request: dict, clock: Callable[[], int]):
    """`{"op":"list",...}`: a listing of one lot (see the module docstring) -> DefineInstrument.
    What the engine alone can judge (the lot's credit type as it was moved in, one listing
    per lot, a symbol taken) it rejects as a value."""
    missing = [key for key in LISTING_REQUIRED if key not in request]
    extra = sorted(set(request) - {"op", *LISTING_REQUIRED, *LISTING_OPTIONAL})
    if missing or extra:
        return Refused(f"list needs {', '.join(LISTING_REQUIRED)} (optional: "
                       f"{', '.join(LISTING_OPTIONAL)})"
                       + (f"; missing {missing}" if missing else f"; unknown {extra}"))
    problem = lot_problem(request["credit_type"], request["project"], request["vintage"])
    if problem:
        return Refused(f"list: {problem}")
    fields = {key: request[key] for key in (*LISTING_REQUIRED, *LISTING_OPTIONAL)
              if key in request}
    try:
        spec = InstrumentSpec.from_fields(**fields)
    except (TypeError, ValueError) as bad:
        return Refused(f"list: {bad}"[:300])
    return DefineInstrument(spec, clock())


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def query(item: Query, exchange) -> dict:
    """The answer to a read-only request: the market's state, or every account's balances
    (cash, reservations and fees as decimal CNY; credits in tonnes)."""
    if item.op == "state":
        return {"ok": True, "state": market_state(exchange)}
    accounts = exchange.accounts.by_id if exchange.accounts is not None else {}
    return {"ok": True, "accounts": {name: a.to_json() for name, a in sorted(accounts.items())}}


def refusal(error: str) -> dict:
    return {"ok": False, "error": error}


def answer(events: list, specs) -> dict:
    """The response to an applied command: its events; not ok if the engine rejected it."""
    return {"ok": not any(type(e) in (OrderRejected, DepositRejected) for e in events),
            "events": [event_to_dict(e, specs) for e in events]}


# ------------------------------------------------------------------ the socket server
class ControlServer:
    """The control socket of one exchange application (see the module docstring).

    application: the ExchangeApplication (run_operator_command, exchange);
    deliver: where the FIX messages for brokers go (GatewayServer.deliver);
    commit: makes applied commands durable before anything is answered (the durable
    engine's commit; default: the application's engine's, if it has one)."""

    def __init__(self, path, application, deliver: Callable[[list], None],
                 commit: Optional[Callable[[], None]] = None, max_line: int = MAX_LINE,
                 clock: Callable[[], int] = time.time_ns):
        self.path = Path(path)
        self.application = application
        self.deliver = deliver
        self.commit = commit if commit is not None else getattr(application.exchange, "commit", None)
        self.max_line = max_line
        self.clock = clock
        self._server: Optional[asyncio.AbstractServer] = None
        self._identity: Optional[tuple[int, int]] = None   # (st_dev, st_ino) of our socket file
        self._clients: set[asyncio.Task] = set()

    # -------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Listen on self.path (mode 0600). A stale socket file (nobody listening) is
        replaced; a live one, or anything that is not a socket, is an OSError."""
        path = str(self.path)
        _remove_stale_socket(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # bind() creates the file with the umask's permissions: restrict them for that
            # moment, so the socket is never reachable by others, not even briefly. (The
            # umask is process-wide; a file another thread creates meanwhile only comes out
            # stricter.)
            previous = os.umask(0o177)
            try:
                with short_address(path) as address:
                    sock.bind(address)
            finally:
                os.umask(previous)
            os.chmod(path, 0o600)
            st = os.stat(path)
            self._identity = (st.st_dev, st.st_ino)
            self._server = await asyncio.start_unix_server(self._serve_client, sock=sock)
        except BaseException:
            sock.close()
            self._unlink_own_socket()
            raise
        log.info("control socket listening on %s", path)

    async def stop(self) -> None:
        """Stop listening, end every client connection, remove the socket file."""
        if self._server is None:
            return
        self._server.close()
        for task in list(self._clients):
            task.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None
        self._unlink_own_socket()

    def _unlink_own_socket(self) -> None:
        # only the file we bound: another server may have replaced it meanwhile
        try:
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._identity:
                os.unlink(self.path)
        except OSError:
            pass
        self._identity = None

    # -------------------------------------------------------------- requests
    def execute(self, command) -> dict:
        """Apply an accepted operator command; the response, once it is durable.

        Once the engine has applied it (its events exist), a failure of what follows (the FIX
        messages, the commit, telling the brokers) is answered as what it is: applied, and
        what failed, so the operator neither retries a halt nor believes a deposit lost. A
        failure before that raises (respond answers "internal error")."""
        events: list = []
        step = "turning its events into FIX messages"
        try:
            outbound = self.application.run_operator_command(command, events)
            step = "making it durable (it holds in memory, but a crash now would lose it)"
            if self.commit is not None:
                self.commit()
            step = "telling the brokers (it is applied and durable)"
            if outbound:
                self.deliver(outbound)
        except Exception as err:
            if not events:
                raise
            log.exception("operator command %r was applied, then %s failed", command, step)
            response = answer(events, self.application.exchange.specs)
            response.update(ok=False, applied=True,
                            error=f"the command was applied, but {step} failed: {err}")
            return response
        return answer(events, self.application.exchange.specs)

    def dispute(self, item: Dispute) -> dict:
        """Record a dispute in the exchange's ledger of record (see the module doc)."""
        exchange = self.application.exchange
        ledger = getattr(exchange, "ledger", None)
        if ledger is None or not ledger.keeps_accounts or not hasattr(ledger, "record_dispute"):
            return refusal("dispute: this exchange has no ledger of record to record it in")
        try:
            if self.commit is not None:
                self.commit()
            settlement = getattr(exchange, "settlement", None)
            recorded = ledger.record_dispute(item.trade_id, item.note, item.ts,
                                             getattr(settlement, "exchange_id", "CCERX"))
        except LedgerRejected as err:
            return refusal(f"dispute: {err}")
        except Exception as err:
            log.exception("operator dispute %r failed", item)
            return refusal(f"internal error, the dispute may not have been recorded: {err}")
        log.info("operator dispute of trade %d recorded: %s", item.trade_id, recorded)
        return {"ok": True, "dispute": recorded}

    def respond(self, item: Union[bytes, Refused]) -> bytes:
        """One response line for one request line (or its refusal)."""
        if type(item) is not Refused:
            item = handle_line(item, self.clock)
        if type(item) is Refused:
            response = refusal(item.error)
        elif type(item) is Dispute:
            response = self.dispute(item)
        elif type(item) is Query:
            try:      # what it shows must be durable: commit what FIX applied before it
                if self.commit is not None:
                    self.commit()
                response = query(item, self.application.exchange)
            except Exception as err:
                log.exception("operator query %r failed", item)
                response = refusal(f"internal error: {err}")
        else:
            try:
                response = self.execute(item)
                log.info("operator command %r %s", item, "applied" if response["ok"] else
                         "applied, then failed" if response.get("applied") else "rejected")
            except NotLeader as err:    # a standby of a cluster: refused before applying
                response = refusal(f"not applied: {err}")
            except Exception as err:
                log.exception("operator command %r failed", item)
                response = refusal(f"internal error, the command may not have been applied: {err}")
        return orjson.dumps(response) + b"\n"

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._clients.add(task)
        splitter = LineSplitter(self.max_line)
        try:
            while True:
                data = await reader.read(READ_CHUNK)
                for item in splitter.feed(data) if data else splitter.finish():
                    writer.write(self.respond(item))
                    # one request per pass of the event loop, so a burst of them does not hold
                    # up FIX traffic; and a client that does not read is not read from
                    await writer.drain()
                    await asyncio.sleep(0)
                if not data:
                    break
        except (ConnectionError, OSError):
            pass                       # the client went away; its applied commands stand
        except asyncio.CancelledError:
            writer.transport.abort()   # stop()
            return
        except Exception:
            log.exception("control connection failed")
        finally:
            self._clients.discard(task)
        writer.close()                 # what is still buffered is sent first


def _remove_stale_socket(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EEXIST, f"{path} exists and is not a socket; not replacing it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        with short_address(path) as address:
            probe.connect(address)
    except ConnectionRefusedError:      # nobody listens: left behind by a server that died
        os.unlink(path)
        return
    except OSError as err:
        if isinstance(err, socket.timeout):
            raise OSError(errno.EADDRINUSE, f"{path} is in use by another server") from None
        raise
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"{path} is in use by another server")


# ------------------------------------------------------------------ the client
class ControlUnavailable(ConnectionError):
    """The control socket could not be reached, or the server went away before answering
    every request; `responses` holds the answers received before that."""

    def __init__(self, text: str, responses: Iterable[dict] = ()):
        super().__init__(text)
        self.responses = list(responses)


def _request_line(request) -> bytes:
    if isinstance(request, dict):
        return orjson.dumps(request) + b"\n"
    line = request.encode() if isinstance(request, str) else bytes(request)
    return line if line.endswith(b"\n") else line + b"\n"


async def operator_request(path, lines: list, timeout: Optional[float] = CLIENT_TIMEOUT) -> list[dict]:
    """Send requests to the control socket at `path`; their responses, in order.

    Each request is a dict (sent as one JSON line) or a raw line (bytes or str, sent as is).
    Raises ControlUnavailable if the socket cannot be reached, or closes or times out
    before every request is answered."""
    path = str(path)
    try:
        with short_address(path) as address:
            reader, writer = await asyncio.open_unix_connection(address, limit=1 << 30)
    except OSError as err:
        raise ControlUnavailable(f"cannot reach the control socket {path}: "
                                 f"{err.strerror or err}") from None
    responses: list[dict] = []

    async def send_all():      # concurrently with reading: the server answers as it reads
        try:
            for request in lines:
                writer.write(_request_line(request))
                await writer.drain()
        except OSError:
            pass               # the server went away: the reading side reports it

    sending = asyncio.create_task(send_all())
    try:
        async with asyncio.timeout(timeout):
            while len(responses) < len(lines):
                line = await reader.readline()
                if not line.endswith(b"\n"):
                    raise ControlUnavailable(
                        f"the control socket {path} closed after {len(responses)} of "
                        f"{len(lines)} answers", responses)
                responses.append(orjson.loads(line))
            await sending
    except (TimeoutError, OSError) as err:
        if isinstance(err, ControlUnavailable):
            raise
        text = "no answer within %s s" % timeout if isinstance(err, TimeoutError) else str(err)
        raise ControlUnavailable(f"control socket {path}: {text} "
                                 f"({len(responses)} of {len(lines)} answered)", responses) from None
    finally:
        sending.cancel()
        writer.transport.abort()
    return responses


def operator_request_sync(path, lines: list, timeout: Optional[float] = CLIENT_TIMEOUT) -> list[dict]:
    """operator_request for synchronous code (not from inside a running event loop)."""
    return asyncio.run(operator_request(path, lines, timeout))
