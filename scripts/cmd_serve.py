"""`ccerx serve`: the engine behind the FIX 4.4 gateway on a TCP port; `ccerx hash-password`."""
from __future__ import annotations

import argparse
import asyncio
import gc
import getpass
import logging
import signal
import ssl
import sys
import time
from pathlib import Path
from typing import Optional

from ccerx.engine.core.calendar import TradingCalendar, load_holidays
from ccerx.engine.core.commands import EndOfDay, SetTradingStatus
from ccerx.engine.durable.files import private_dir
from ccerx.engine.formats.config import load_instruments
from ccerx.gateway.addresses import is_loopback
from ccerx.gateway.config import DEMO_CONFIG, GatewayConfig, hash_password
from ccerx.engine.core.rules import CBEEX_2023, PROFILES
from ccerx.gateway.control import SOCKET_NAME, ControlServer
from ccerx.gateway.fix.store import StoreCorrupt
from ccerx.gateway.fix.translate import ExchangeApplication

DEFAULT_HOST, DEFAULT_PORT, DEFAULT_DATA_DIR = "127.0.0.1", 9878, "data"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "serve", help="run the exchange behind the FIX 4.4 gateway",
        description="Start the matching engine with the FIX 4.4 order-entry gateway. With no "
                    "--config it runs the built-in demo: gateway CompID CCERX, brokers BROKER01 "
                    "(password demo01; accounts EMIT01, HOLD01) and BROKER02 (demo02; EMIT02, "
                    "HOLD02). Stop with Ctrl-C or SIGTERM: sessions are logged out, state flushed.")
    p.add_argument("--config", metavar="FILE", help="gateway config (TOML); default: the demo")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"TCP port (default {DEFAULT_PORT}; 0 picks a free one)")
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR, metavar="DIR",
                   help="durable state: FIX message stores (fix/), engine journal and ledger "
                        f"(default ./{DEFAULT_DATA_DIR})")
    p.add_argument("--conformance", action="store_true",
                   help="also run the FIX acceptance-test session (acceptor ISLD, initiator TW44, "
                        "echo application, reset on logon)")
    p.add_argument("--fsync", action="store_true",
                   help="fsync the FIX message stores on every flush (survives power loss; "
                        "default: flushed to the OS before bytes reach the socket)")
    p.add_argument("--hours", choices=["always", "cn"], default="always",
                   help="trading hours: 'cn' opens continuous trading on weekdays 09:30-11:30 and "
                        "13:00-15:00 China Standard Time and closes the day at 15:00 (day orders "
                        "expire, the VWAP close becomes the next reference price; a close missed "
                        "while the server was down runs at start); 'always' (default, for testing "
                        "and demos) keeps the market open and never closes the day by itself")
    p.add_argument("--holidays", metavar="FILE",
                   help="with --hours cn: the exchange's published holidays, one YYYY-MM-DD per "
                        "line (# comments); no trading and no close on those dates")
    p.add_argument("--control", metavar="PATH",
                   help="the operator's control socket (Unix domain, mode 0600) for `ccerx "
                        "operator`: close the day, halt or resume trading; default "
                        "DIR/control.sock in the data directory, 'none' to go without")
    p.add_argument("--tls-cert", metavar="FILE",
                   help="serve FIX over TLS (1.2 or later) with this PEM certificate (chain); "
                        "plain TCP without it, which is allowed only on a loopback address")
    p.add_argument("--tls-key", metavar="FILE",
                   help="the PEM private key of --tls-cert (default: in the --tls-cert file)")
    p.add_argument("--tls-client-ca", metavar="FILE",
                   help="with --tls-cert: require a client certificate from each broker, "
                        "signed by a CA in this PEM file (mutual TLS)")
    p.add_argument("--cluster", metavar="nats://HOST:PORT[,...]",
                   help="run as one node of a replicated exchange: commands go to the JetStream "
                        "stream CCERX_CMDS on these NATS servers and count as accepted once a "
                        "quorum stored them; one node leads (lease in the key-value bucket "
                        "CCERX_LEADER), the others apply the stream as hot standbys and refuse "
                        "FIX logons naming the leader (see engine/durable/replicated.py); "
                        "default: one machine, the local journal only")
    p.add_argument("--node", metavar="NAME",
                   help="with --cluster: this node's name (unique in the cluster)")
    p.add_argument("--front", metavar="NAME",
                   help="with --cluster, instead of --node: run a front gateway named NAME "
                        "(unique in the cluster): it serves its own brokers' FIX sessions and "
                        "sends their orders to the leader (core NATS subject ccerx.front.in); "
                        "it follows the stream like a standby but never leads, answers once an "
                        "order is in the stream, and takes no operator commands (no control "
                        "socket). Give it the cluster's config (every broker's accounts: the "
                        "engine's opening) and --brokers for its group")
    p.add_argument("--brokers", metavar="COMPID,...",
                   help="the config's brokers whose FIX sessions this process serves (default: "
                        "all of them); the others' accounts stay in the engine. A broker logs "
                        "on to one gateway process: the leader or one front; with fronts, "
                        "give every --node the same group (a node that takes over adopts the "
                        "resting orders of the brokers it serves)")
    p.add_argument("--replicas", type=int, default=3, metavar="N",
                   help="with --cluster: copies of the stream, when this node creates it "
                        "(default 3: one per server of a three-server NATS cluster)")
    p.add_argument("--cluster-snapshot-every", type=int, default=100_000, metavar="N",
                   help="with --cluster: standbys put a join bundle (snapshot, FIX stores, "
                        "stream position) in the object store CCERX_SNAPSHOTS every N commands; "
                        "a node started on an empty data directory joins from the newest "
                        "instead of replaying the stream from its start (0: none)")
    p.add_argument("--cluster-retain", default="3600", metavar="SECONDS|all",
                   help="with --cluster: the standby that puts a join bundle trims the stream "
                        "below the older of the two kept bundles, but not past the position of "
                        "a node that reported within SECONDS (a node down longer rejoins from "
                        "the newest bundle when it starts again); 'all' keeps every message "
                        "(default 3600; nothing is trimmed without join bundles)")
    p.add_argument("--ledger", metavar="FILE|URL",
                   help="the settlement ledger: a SQLite file (default DIR/ledger.sqlite) or "
                        "postgresql://USER@HOST:PORT/DB?schema=NAME; the nodes of a cluster "
                        "share one (on several machines: PostgreSQL), whose idempotence absorbs "
                        "what a new leader re-sends")
    p.add_argument("--insecure-plaintext", action="store_true",
                   help="allow plain TCP on a non-loopback --host (broker passwords cross the "
                        "network in clear: only behind a TLS-terminating proxy or a private link)")
    p.add_argument("--rules", choices=sorted(PROFILES), default=None,
                   help="trading rules a new data directory starts with (default: the config's "
                        "`rules`, else cbeex-2023, the CCER rulebook: day orders, listings and "
                        "takes, the 5-trading-day holding period); an existing data directory "
                        "keeps the rules it was created with")
    p.add_argument("--console", metavar="HOST:PORT",
                   help="also serve the operator console (a web application: market, books, "
                        "trade tape, alerts and cases, accounts, halt/resume/close) on this "
                        "address, e.g. 127.0.0.1:8080 (port 0 picks a free one); loopback only "
                        "unless --insecure-plaintext")
    p.add_argument("--console-operators", metavar="FILE.toml",
                   help="with --console: who may log in, [[operator]] name = \"...\", "
                        "password = \"<hash from `ccerx hash-password`>\", display = \"王芳\"")
    p.add_argument("--console-surveillance", metavar="FILE.toml",
                   help="with --console: settings of the live surveillance (as `ccerx surveil "
                        "--config`; default scenarios/surveillance.toml's values)")
    p.add_argument("--console-related", metavar="FILE.toml",
                   help="with --console: related accounts for the live surveillance (as "
                        "`ccerx surveil --related`)")
    p.add_argument("--print-demo-config", action="store_true",
                   help="print the built-in demo config (a starting point for your own) and exit")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"],
                   help="log on stderr; info shows session events (resends, session rejects); "
                        "logons, logouts and failed logons are shown at every level but error "
                        "(default warning)")
    p.set_defaults(run=run)

    h = sub.add_parser("hash-password", help="hash a broker password for a gateway config",
                       description="Print a salted scrypt hash to put in a gateway config's "
                                   "[[broker]] password. Reads the password from the terminal "
                                   "(or one line of stdin when it is not a terminal).")
    h.add_argument("--password", help=argparse.SUPPRESS)  # for scripts and tests only
    h.set_defaults(run=run_hash_password)


def open_engine(data_dir: Path, instruments, accounts, rules=CBEEX_2023, ledger=None, **kwargs):
    """The engine behind the gateway: the one place that decides how it is built and kept.

    The durable engine: every command is journaled (fsync) in `data_dir` before apply()
    returns, state is recovered from snapshot + journal on start, and trades settle into the
    embedded SQLite ledger `data_dir/ledger.sqlite`. Whatever it returns must offer Exchange's
    interface (apply, books, specs, accounts) and may offer close(). `ledger`: another
    ledger, a SQLite file or a postgresql:// URL (engine/ledger/where.py; shared by the
    nodes of a cluster)."""
    from ccerx.engine.durable.exchange import DurableExchange
    if ledger is not None:
        from ccerx.engine.ledger.where import open_ledger
        kwargs["ledger"] = open_ledger(ledger)
    elif accounts is not None and "journal_hook" not in kwargs:
        # the gateway's own ledger settles in a process of its own: its relay's Python work
        # does not hold the interpreter lock the event loop needs (engine/ledger/process.py)
        from ccerx.engine.ledger.process import LedgerProcess
        from ccerx.engine.ledger.sqlite import SqliteLedger
        kwargs["ledger"] = LedgerProcess(SqliteLedger, Path(data_dir) / "ledger.sqlite")
    try:
        return DurableExchange(data_dir, instruments, accounts, rules=rules, **kwargs)
    except BaseException:
        if hasattr(kwargs.get("ledger"), "close"):
            kwargs["ledger"].close()
        raise


def open_cluster_node(args, data_dir: Path, instruments, accounts, rules):
    """--cluster: this process as one node of a replicated exchange (replicated.py): the
    durable engine over its own data directory, behind the JetStream stream; with --front, a
    front gateway's replica. ValueError for bad options."""
    from ccerx.engine.durable.replicated import ClusterNode, ClusterSettings, parse_servers
    front = getattr(args, "front", None)
    if front and args.node:
        raise ValueError("--front NAME or --node NAME: a process is one or the other")
    if front and not args.cluster:
        raise ValueError("--front needs --cluster")
    if front and getattr(args, "console", None):
        raise ValueError("--console runs on the nodes, not on a front")
    name = front or args.node
    if not args.cluster or not name:
        raise ValueError("--cluster and --node go together")
    flag = "--front" if front else "--node"
    if not name.isascii() or not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"{flag} {name!r}: letters, digits, - and _ only")
    if not 1 <= args.replicas <= 5:
        raise ValueError("--replicas must be 1-5 (JetStream's limit)")
    if args.cluster_snapshot_every < 0:
        raise ValueError("--cluster-snapshot-every must be 0 (none) or more commands")
    settings = ClusterSettings(parse_servers(args.cluster), name, replicas=args.replicas,
                               snapshot_every=args.cluster_snapshot_every,
                               retain_s=parse_retain(args.cluster_retain))
    return ClusterNode(settings, lambda hook: open_engine(
        data_dir, instruments, accounts, rules, ledger=args.ledger, journal_hook=hook,
        start_relays=False), data_dir=data_dir, front=bool(front))


def serving_brokers(config: GatewayConfig, text: Optional[str]) -> dict:
    """--brokers A,B: {CompID: BrokerConfig} of the config's brokers this process serves;
    ValueError for a CompID the config does not have."""
    if not text:
        return dict(config.brokers)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in config.brokers]
    if unknown or not names:
        named = ", ".join(unknown) if unknown else repr(text)
        raise ValueError(f"--brokers: {named} not among the config's brokers "
                         f"({', '.join(config.brokers)})")
    return {name: config.brokers[name] for name in names}


def parse_retain(text: str):
    """--cluster-retain: seconds (a float, at least 1) or 'all' (None: never trim)."""
    if text.strip().lower() == "all":
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not seconds >= 1 or seconds == float("inf"):
        raise ValueError(f"--cluster-retain {text!r}: seconds (at least 1) or 'all'")
    return seconds


def gate_logons(sessions: list, node) -> None:
    """A standby closes the connection of every Logon unanswered (brokers try the next host;
    a Logout would move their sequence numbers: QuietRefusal); its log names the leader."""
    from ccerx.gateway.limits import QuietRefusal
    for settings in sessions:
        check = settings.authenticate

        def authenticate(key, logon, check=check):
            # a front serves once its replica caught up with the stream
            if not (node.ready if node.front else node.leading):   # (never backs off)
                SESSION_LOG.info("logon for %s closed unanswered: %s", key.their_comp_id,
                                 node.refusal())
                return QuietRefusal(node.refusal())
            return None if check is None else check(key, logon)
        settings.authenticate = authenticate


# The ledger relay runs in a thread of this process. Each delivery is a ledger transaction
# during which it holds the GIL; the event loop gives the GIL up on every system call and,
# with CPython's default 5 ms switch interval, could wait that long to get it back. Measured
# with benchmarks/gateway_load.py (10 sessions, 5,000 orders/s): p99 145 ms -> 19 ms with a
# 0.5 ms interval; lingering 20 ms per delivery cut the process's CPU per order by ~1/3.
SWITCH_INTERVAL_S = 0.0005
RELAY_LINGER_S = 0.02


def gateway_durability(engine, console: bool, cluster: bool = False) -> dict:
    """How the gateway waits for the durable engine before acknowledging (GatewayServer
    keyword arguments). The durable engine's journal writer thread fsyncs while the event loop
    goes on, and acknowledgements wait for it (durability=). Two cases keep the commit on the
    loop (before_write=, the loop waits for each fsync): a cluster node (the LeaderGate: its
    replicated journal publishes to the stream in the commit) and the console, whose feed
    publishes events at the engine's synchronous commit."""
    if hasattr(engine, "commit_async") and not console and not cluster:
        return {"durability": engine}
    return {"before_write": getattr(engine, "commit", None)}


def tune_for_latency(engine) -> None:
    """GIL switch interval and relay batching for a gateway process (see above)."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    for relay in getattr(engine, "relays", {}).values():
        relay.linger = RELAY_LINGER_S


# Logons, logouts and failed logons: what an operator wants to see by default (without the
# session chatter of --log-level info), so on a logger of their own that run() shows at
# the default level. No secrets: a failed logon says why (the authenticator's verdict), never
# what was sent.
SESSION_LOG = logging.getLogger("ccerx.serve.sessions")


class LoggedLogons:
    """The exchange application, with each broker session's logon and logout logged."""

    def __init__(self, inner):
        self._inner = inner

    def on_logon(self, key):
        SESSION_LOG.info("%s logged on", key.their_comp_id)
        return self._inner.on_logon(key)

    def on_logout(self, key):
        SESSION_LOG.info("%s logged out", key.their_comp_id)
        return self._inner.on_logout(key)

    def __getattr__(self, name):       # on_message, run_operator_command, exchange, ...
        return getattr(self._inner, name)


def logged_authenticator(authenticate):
    """`authenticate` (key, logon) -> None or the refusal's text, with refusals logged."""
    if authenticate is None:
        return None

    def checked(key, logon):
        verdict = authenticate(key, logon)
        if verdict:
            SESSION_LOG.info("failed logon for %s: %s", key.their_comp_id, verdict)
        return verdict
    return checked


def build_sessions(config: GatewayConfig, application, conformance: bool,
                   brokers: Optional[dict] = None) -> list:
    from ccerx.gateway.server import SessionSettings, conformance_session
    application = LoggedLogons(application)
    authenticate = logged_authenticator(config.authenticate)
    sessions = [SessionSettings(key=config.session_key(broker.comp_id), application=application,
                                heartbeat_interval=broker.heartbeat_interval,
                                reset_on_logon=broker.reset_on_logon,
                                authenticate=authenticate,
                                heartbeat_bounds=config.heartbeat_bounds)
                for broker in (config.brokers if brokers is None else brokers).values()]
    if conformance:
        sessions.append(conformance_session())
    return sessions


def run(args) -> int:
    if args.print_demo_config:
        print(DEMO_CONFIG, end="")
        return 0
    level = getattr(logging, args.log_level.upper())
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    SESSION_LOG.setLevel(logging.INFO if level <= logging.WARNING else level)
    try:
        config = GatewayConfig.load(args.config) if args.config else GatewayConfig.demo()
        instruments = load_instruments(config.instruments_path)
        holidays = load_holidays(args.holidays) if getattr(args, "holidays", None) else ()
        rules = config.rule_profile(getattr(args, "rules", None))
    except ValueError as err:  # ConfigError included
        print(f"ccerx serve: {err}", file=sys.stderr)
        return 2
    if holidays and args.hours != "cn":
        print("ccerx serve: --holidays needs --hours cn", file=sys.stderr)
        return 2
    args.holiday_dates = holidays
    if not 0 <= args.port <= 65535:
        print("ccerx serve: --port must be 0-65535", file=sys.stderr)
        return 2
    try:
        args.tls_context = tls_context(args)
    except ValueError as err:
        print(f"ccerx serve: {err}", file=sys.stderr)
        return 2
    args.console_setup = None
    if getattr(args, "console", None):
        try:
            from ccerx.gateway.console.app import ConsoleSetup
        except ImportError as err:
            print(f"ccerx serve: --console needs aiohttp ({err}): pip install 'ccerx[console]'",
                  file=sys.stderr)
            return 2
        try:
            args.console_setup = ConsoleSetup.from_args(
                args.console, args.console_operators, args.insecure_plaintext,
                args.console_surveillance, args.console_related)
        except ValueError as err:     # ConfigError included
            print(f"ccerx serve: {err}", file=sys.stderr)
            return 2
    data_dir = Path(args.data_dir)
    try:
        private_dir(data_dir)
    except OSError as err:
        print(f"ccerx serve: cannot create {data_dir}: {err.strerror}", file=sys.stderr)
        return 2
    try:
        brokers = serving_brokers(config, getattr(args, "brokers", None))
    except ValueError as err:
        print(f"ccerx serve: {err}", file=sys.stderr)
        return 2
    args.cluster_node = args.front_link = None
    if (getattr(args, "cluster", None) or getattr(args, "node", None)
            or getattr(args, "front", None)):
        try:
            args.cluster_node = open_cluster_node(args, data_dir, instruments,
                                                  config.build_accounts(), rules)
        except ValueError as err:
            print(f"ccerx serve: {err}", file=sys.stderr)
            return 2
        except ConnectionError as err:    # replicated.JoinFailed: an empty node, no NATS
            print(f"ccerx serve: {err}", file=sys.stderr)
            return 1
        engine = args.cluster_node.engine
    else:
        engine = open_engine(data_dir, instruments, config.build_accounts(), rules,
                             ledger=getattr(args, "ledger", None))
    if engine.rules != rules:
        print(f"ccerx serve: {data_dir} was created under the {engine.rules.name} rules and "
              f"keeps them (--rules/config asked for {rules.name}; use a new --data-dir)",
              file=sys.stderr)
    tune_for_latency(engine)
    if args.console_setup is not None:    # before the application takes the apply methods
        args.console_setup.observe(engine, data_dir)
    try:
        group_commit = hasattr(engine, "apply_deferred")   # the durable engine
        forward = None
        if args.cluster_node is not None and args.cluster_node.front:
            from ccerx.gateway.front import FrontLink
            args.front_link = FrontLink(args.cluster_node)
            forward = args.front_link.forward
        application = ExchangeApplication(engine, config.comp_id, brokers,
                                          group_commit=group_commit, forward=forward)
        sessions = build_sessions(config, application, args.conformance, brokers)
        if args.cluster_node is not None:
            gate_logons(sessions, args.cluster_node)
        try:
            return asyncio.run(_serve(args, config, sessions, data_dir, engine))
        except StoreCorrupt as err:     # a FIX store that cannot be read: never start it at 1
            print(f"ccerx serve: {err}", file=sys.stderr)
            return 2
    finally:
        close = getattr(engine, "close", None)
        if close is not None:
            close()


async def _serve(args, config: GatewayConfig, sessions: list, data_dir: Path, engine=None) -> int:
    from ccerx.gateway.server import GatewayServer
    server = GatewayServer(args.host, args.port, sessions, store_dir=data_dir / "fix",
                           store_fsync=args.fsync,
                           **gateway_durability(
                               engine, console=getattr(args, "console_setup", None) is not None,
                               cluster=getattr(args, "cluster_node", None) is not None),
                           limits=config.limits,
                           ssl_context=getattr(args, "tls_context", None))
    try:
        await server.start()
    except OSError as err:
        print(f"ccerx serve: cannot listen on {args.host}:{args.port}: {err.strerror}",
              file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    application = next((s.application for s in sessions if hasattr(s.application,
                                                                     "run_operator_command")), None)
    control = None
    # a front takes no operator commands: they go to the leader's control socket
    control_path = (None if getattr(args, "front_link", None) is not None
                    else control_socket_path(args, data_dir))
    if application is not None and control_path is not None:
        control = ControlServer(control_path, application, server.deliver)
        try:
            await control.start()
        except OSError as err:
            print(f"ccerx serve: cannot open the control socket {control_path}: "
                  f"{err.strerror or err}", file=sys.stderr)
            await server.stop()
            return 1
    console = getattr(args, "console_setup", None)
    if console is not None and application is not None:
        try:
            await console.start(application, server.deliver)
        except OSError as err:
            print(f"ccerx serve: cannot serve the console on {args.console}: "
                  f"{err.strerror or err}", file=sys.stderr)
            if control is not None:
                await control.stop()
            await server.stop()
            return 1
    leading = start_cluster_node(args, server, application, loop)
    # start-up is over (imports, config, the recovered book): collected once and frozen out of
    # the collector's reach, so a full collection while serving traverses only what arrived
    # since, not the recovered state (issue 13 item 3)
    gc.collect()
    gc.freeze()
    names = ", ".join(f"{s.key.their_comp_id}" for s in sessions)
    transport = "TLS" if getattr(args, "tls_context", None) else "plain TCP"
    print(f"ccerx serve: {config.comp_id} listening on {args.host}:{server.port} "
          f"(FIX.4.4 over {transport}; sessions {names}; config {config.source}; "
          f"data {data_dir}; rules {getattr(engine, 'rules', None) and engine.rules.name}; "
          f"{market_now(args, time.time_ns())}"
          f"{'console ' + console.url + '; ' if console is not None else ''}"
          f"control {control.path if control is not None else 'none'})", flush=True)
    # (no await since control.start(): the calendar's first pass runs before any operator
    # request can be read, so it cannot undo a halt sent right at startup)
    serving = asyncio.create_task(server.serve_forever())
    calendar = (TradingCalendar(holidays=getattr(args, "holiday_dates", ()))
                if getattr(args, "hours", "always") == "cn" else None)
    if application is not None:
        stop_calendar = asyncio.create_task(
            after_event(leading, lambda: run_calendar(calendar, application, server,
                                                      application.exchange)))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if control is not None:
        await control.stop()
    if console is not None:
        await console.stop()
    if application is not None:
        stop_calendar.cancel()
        await asyncio.gather(stop_calendar, return_exceptions=True)
    await server.stop()  # logs every session out and flushes the message stores
    for task in (serving, stopping):
        task.cancel()
    await asyncio.gather(serving, stopping, return_exceptions=True)
    print("ccerx serve: stopped", flush=True)
    return 0


def start_cluster_node(args, server, application, loop) -> Optional[asyncio.Event]:
    """--cluster: join the cluster now that the FIX address is known. Returns an event set
    once this node leads (then it takes over the engine's resting orders for FIX, as after a
    restart); None without --cluster (this process is the exchange)."""
    node = getattr(args, "cluster_node", None)
    if node is None:
        return None
    from ccerx.engine.durable.replicated import shown_servers
    from ccerx.gateway.cluster import replicate_sessions, take_over
    from ccerx.gateway.front import FrontIntake
    leading = asyncio.Event()
    if node.front:               # its FIX sessions are its own; it never leads
        args.front_link.attach(application, server, loop)
        try:
            node.start(f"{args.host}:{server.port}", lambda: None)
        except Exception as err:
            print(f"ccerx serve: cannot join the cluster at "
                  f"{shown_servers(node.settings.servers)}: {err!r}", file=sys.stderr,
                  flush=True)
            raise SystemExit(1) from None
        print(f"ccerx serve: front {node.settings.node} on "
              f"{shown_servers(node.settings.servers)}: following the stream, forwarding to "
              f"the leader", file=sys.stderr, flush=True)
        return leading
    replicate_sessions(server, node, loop, application)   # FIX stores: in the stream, mirrored
    if application is not None:
        FrontIntake(node, application, server, loop)       # front batches, once it leads

    def on_leader():             # in the gateway's event loop
        if application is not None:
            take_over(application, server)
        leading.set()
    try:
        node.start(f"{args.host}:{server.port}", lambda: loop.call_soon_threadsafe(on_leader))
    except Exception as err:     # concurrent.futures.TimeoutError included
        print(f"ccerx serve: cannot join the cluster at "
              f"{shown_servers(node.settings.servers)}: {err!r}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    print(f"ccerx serve: cluster node {node.settings.node} on "
          f"{shown_servers(node.settings.servers)}: following the stream, standing for leader",
          file=sys.stderr, flush=True)
    return leading


async def after_event(event: Optional[asyncio.Event], start):
    """Run start() once event is set (None: at once): the calendar runs on the leader only."""
    if event is not None:
        await event.wait()
    return await start()


def tls_context(args) -> Optional[ssl.SSLContext]:
    """The server's TLS context from --tls-cert/--tls-key/--tls-client-ca (None: plain TCP),
    or ValueError saying what is wrong. Plain TCP off loopback needs --insecure-plaintext: a
    Logon carries the broker's password (554)."""
    cert, key, client_ca = args.tls_cert, args.tls_key, args.tls_client_ca
    if cert is None:
        for given, flag in ((key, "--tls-key"), (client_ca, "--tls-client-ca")):
            if given is not None:
                raise ValueError(f"{flag} needs --tls-cert")
        if not is_loopback(args.host) and not args.insecure_plaintext:
            raise ValueError(
                f"refusing to listen on {args.host} without TLS: broker passwords (554) would "
                f"cross the network in clear. Give --tls-cert FILE --tls-key FILE (see "
                f"docs/broker-kit/tls.md), listen on 127.0.0.1, or pass --insecure-plaintext "
                f"if a TLS-terminating proxy or a private link protects the connection")
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except OSError as err:   # ssl.SSLError included
        raise ValueError(f"cannot load the TLS certificate {cert}"
                         f"{' with key ' + key if key else ''}: {_ssl_reason(err)}") from None
    if client_ca is not None:
        try:
            context.load_verify_locations(cafile=client_ca)
        except OSError as err:
            raise ValueError(f"cannot load the client CA file {client_ca}: "
                             f"{_ssl_reason(err)}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _ssl_reason(err: OSError) -> str:
    if isinstance(err, ssl.SSLError):
        return err.reason or str(err)
    return err.strerror or str(err)


def market_now(args, now: int) -> str:
    """For the start line with --hours cn: whether the schedule has the market open now, and
    until or from when (China Standard Time), e.g. "hours cn: market CLOSED now (weekend;
    opens Mon 2026-12-07 09:30 CST); ". Empty for --hours always."""
    if getattr(args, "hours", "always") != "cn":
        return ""
    from datetime import datetime, timezone
    calendar = TradingCalendar(holidays=getattr(args, "holiday_dates", ()))
    change = calendar.next_change(now)
    at = datetime.fromtimestamp((change + calendar.offset_ns) // 10**9, timezone.utc)
    when = f"{at:%a %Y-%m-%d %H:%M} CST"
    phase = calendar.note(now)
    if calendar.is_open(now):
        return f"hours cn: market OPEN now ({phase} until {when}); "
    phase = {"closed": "after the close"}.get(phase, phase.removeprefix("closed (").rstrip(")"))
    return f"hours cn: market CLOSED now ({phase}; opens {when}); "


def control_socket_path(args, data_dir: Path) -> Optional[Path]:
    """--control PATH, default DATA_DIR/control.sock; None for --control none."""
    control = getattr(args, "control", None)
    if control is None:
        return data_dir / SOCKET_NAME
    return None if control == "none" else Path(control)


def calendar_commands(calendar, exchange, now: int, last_pass: Optional[int] = None,
                      floor: int = 0) -> list:
    """What the trading calendar requires of the exchange at `now` (ns): close a day whose
    close is due (or was missed while the server was down), then open or close trading.
    calendar None means round-the-clock trading (the market is simply kept open).

    `last_pass` is when the calendar last looked (None: the server is starting). The trading
    status follows the schedule at start and whenever a session boundary has passed since the
    last pass; in between, the operator's halt or resume stands. Closes at or before `floor`
    are never due (a brand-new exchange has no missed day to close: see run_calendar)."""
    commands = []
    trading_open, halted = exchange.trading_open, exchange.halted
    if calendar is None:
        if not trading_open:
            commands.append(SetTradingStatus(True, "open (round the clock)", now))
        return commands
    due_close = calendar.last_close(now)
    # A close is due if that trading date has not been closed yet (by the calendar, or early by
    # the operator's `eod` after the day's opening). It is stamped with the close time, so the
    # day's statements carry the trading day's date. At start, a day that was traded after its
    # close time (the server ran with --hours always) is not cut: the next scheduled close
    # ends it.
    if (due_close > floor and exchange.last_close_ts < calendar.first_open(due_close)
            and (last_pass is not None or exchange.last_ts <= due_close)):
        if trading_open or halted:            # the close ends a halt too
            commands.append(SetTradingStatus(False, "close", due_close))
            trading_open = halted = False
        commands.append(EndOfDay(due_close))
    if last_pass is not None and calendar.next_change(last_pass) > now:
        return commands                       # no boundary passed: the status stands
    # a day the operator closed early stays closed until the next trading day
    closed_early = calendar.is_open(now) and exchange.last_close_ts >= calendar.first_open(now)
    want_open = calendar.is_open(now) and not closed_early
    if want_open != trading_open or halted:   # a boundary ends a halt: the schedule speaks
        note = "closed for the day (closed early)" if closed_early else calendar.note(now)
        commands.append(SetTradingStatus(want_open, note, now))
    return commands


async def run_calendar(calendar, application, server, exchange) -> None:
    """Drive the trading calendar: at each session boundary, apply what it requires and tell
    the brokers (TradingSessionStatus, expiries). Sleeps until the next boundary (at most a
    minute at a time, so a clock that jumps is noticed)."""
    last_pass = None
    # a brand-new exchange starts after the latest scheduled close: none before it is missed
    floor = calendar.last_close(time.time_ns()) if calendar and not exchange.seq else 0
    while True:
        now = time.time_ns()
        outbound = []
        for command in calendar_commands(calendar, exchange, now, last_pass, floor):
            outbound += application.run_operator_command(command)
        if outbound:
            server.deliver(outbound)
        if calendar is None:
            return
        last_pass = now
        wait_s = (calendar.next_change(now) - time.time_ns()) / 1e9
        await asyncio.sleep(min(max(wait_s, 0.01), 60.0))


def run_hash_password(args) -> int:
    password = args.password
    if password is None:
        if sys.stdin.isatty():
            password = getpass.getpass("password: ")
            if getpass.getpass("again: ") != password:
                print("ccerx hash-password: the passwords differ", file=sys.stderr)
                return 2
        else:
            password = sys.stdin.readline().rstrip("\r\n")
    try:
        print(hash_password(password))
    except ValueError as err:
        print(f"ccerx hash-password: {err}", file=sys.stderr)
        return 2
    return 0

