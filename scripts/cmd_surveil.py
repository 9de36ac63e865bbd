"""`ccerx surveil`: market surveillance (rules Art.44) over an events file, a data directory or
a simulation, and the cases on its alerts.

    ccerx surveil EVENTS.ndjson [--config FILE] [--related FILE] [--disclosures FILE] [--out DIR]
    ccerx surveil DATA_DIR ...             # the directory's journal, replayed read-only
    ccerx surveil --simulate [SCENARIO]    # the in-process simulation's events ("default")
    ccerx surveil case list [--state open|under_review|closed] [--rule RULE] [--out DIR]
    ccerx surveil case show ID
    ccerx surveil case review ID [--note TEXT]
    ccerx surveil case close ID --note TEXT
    ccerx surveil case reopen ID --note TEXT

Writes DIR/alerts.ndjson (one alert a line, in the order raised) and DIR/summary.txt (counts
per detector, the top alerts); both are the same, byte for byte, for the same events and
settings. New alerts are added to the case store DIR/cases.sqlite as open cases; alerts it
already holds keep their cases. A data directory is only read (snapshot 0 and the journal
after it): nothing in it is written.
"""
from __future__ import annotations

import getpass
import sys
import time
from pathlib import Path

import orjson

CASE_ACTIONS = ("list", "show", "review", "close", "reopen")
DEFAULT_OUT = "out/surveillance"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "surveil", help="market surveillance (Art.44): alerts from events, a data directory "
                        "or a simulation; `surveil case ...` works the cases",
        description="Run the five Art.44 detectors (pre-disclosure trading, wash and related "
                    "trades, ramping, spoofing, value transfer) over an events file (`ccerx "
                    "replay --events-out`), a data directory (its journal, read-only) or the "
                    "in-process simulation; write alerts.ndjson and summary.txt and open a case "
                    "per new alert in DIR/cases.sqlite. `ccerx surveil case list|show|review|"
                    "close|reopen [ID]` works the cases.")
    p.add_argument("input", nargs="?", metavar="DATA_DIR|EVENTS.ndjson|case",
                   help="events file or data directory to surveil; or `case` followed by "
                        f"{'|'.join(CASE_ACTIONS)} [ID]")
    p.add_argument("case_args", nargs="*", metavar="ACTION [ID]", help="with `case`: "
                   f"{'|'.join(CASE_ACTIONS)}, and the alert id for all but list")
    p.add_argument("--simulate", nargs="?", const="default", metavar="SCENARIO.toml",
                   help="surveil the in-process simulation of this scenario (default: the "
                        "built-in default scenario) instead of a file")
    p.add_argument("--days", type=int, help="with --simulate: trading days (overrides the scenario)")
    p.add_argument("--config", metavar="FILE.toml",
                   help="detector settings (see scenarios/surveillance.toml; keys left out keep "
                        "their defaults)")
    p.add_argument("--related", metavar="FILE.toml",
                   help="related accounts ([[relation]] kind = group|beneficial_owner, name, "
                        "accounts)")
    p.add_argument("--disclosures", metavar="FILE.ndjson",
                   help="price-sensitive disclosures, one {\"ts\":NS,\"instrument\":...,"
                        "\"direction\":\"negative|positive|unknown\",\"id\":...,\"note\":...} "
                        "a line, merged into the stream by time")
    p.add_argument("--instruments", metavar="FILE.toml",
                   help="instrument specs for an events file (default: the CCER defaults; "
                        "instrument lines in the file count too)")
    p.add_argument("--out", metavar="DIR", default=DEFAULT_OUT,
                   help=f"where alerts.ndjson, summary.txt and cases.sqlite go (default "
                        f"{DEFAULT_OUT}; out/ is git-ignored)")
    p.add_argument("--top", type=int, default=10, help="alerts listed in the summary (default 10)")
    p.add_argument("--state", help="case list: only cases in this state")
    p.add_argument("--rule", help="case list: only alerts of this rule")
    p.add_argument("--note", default="", help="case review/close/reopen: the note (any language)")
    p.add_argument("--operator", help="case review/close/reopen: who acts (default: the login name)")
    p.add_argument("--json", action="store_true", help="case list/show: JSON output")
    p.set_defaults(run=run)


def fail(text: str) -> int:
    print(f"ccerx surveil: {text}", file=sys.stderr)
    return 2


def run(args) -> int:
    if args.input == "case":
        return run_case(args)
    if args.case_args:
        return fail(f"unrecognized arguments: {' '.join(args.case_args)}")
    if (args.input is None) == (args.simulate is None):
        return fail("give one input: an events file, a data directory, or --simulate")
    from ccerx.engine.surveillance.config import load_config
    from ccerx.engine.surveillance.relations import load_relations
    try:
        config = load_config(args.config)
        related = load_relations(args.related)
        disclosures = load_disclosures(args.disclosures) if args.disclosures else []
    except ValueError as err:
        return fail(str(err))
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        return fail(f"--out {out} is not a directory")
    notes: list[str] = []
    try:
        if args.simulate is not None:
            label, specs, events = simulation_source(args.simulate, args.days)
        else:
            label, specs, events = input_source(Path(args.input), args.instruments, notes)
    except ValueError as err:
        return fail(str(err))
    from ccerx.engine.surveillance.monitor import Surveillance
    monitor = Surveillance(config, related, specs)
    alerts: list = []
    count = 0
    try:
        for event in merge_disclosures(events, disclosures):
            count += 1
            alerts.extend(monitor.feed(event))
    except ValueError as err:      # a bad line in an events file: nothing was written
        return fail(str(err))
    alerts.extend(monitor.finish())
    summary = summary_text(label, count, alerts, args, len(related), notes)
    from ccerx.engine.durable.files import private_dir, write_atomic
    private_dir(out)
    write_atomic(out / "alerts.ndjson",
                 b"".join(orjson.dumps(a.to_json(), option=orjson.OPT_SORT_KEYS) + b"\n"
                          for a in alerts))
    write_atomic(out / "summary.txt", summary.encode())
    from ccerx.engine.surveillance.cases import CaseStore
    with CaseStore(out / "cases.sqlite", time.time_ns) as store:
        added, known = store.add_alerts(alerts, label)
    print(summary, end="")
    print(f"\nwrote {out / 'alerts.ndjson'} and {out / 'summary.txt'}; cases in "
          f"{out / 'cases.sqlite'}: {added:,} new, {known:,} already there")
    return 0


# ---------------------------------------------------------------------------- sources
def input_source(path: Path, instruments, notes: list):
    """(label, specs, events) for an events file or a data directory."""
    if path.is_dir():
        if instruments:
            raise ValueError("--instruments is for an events file; a data directory holds its own")
        specs, events = directory_events(path, notes)
        return str(path), specs, events
    if not path.exists():
        raise ValueError(f"no such file or directory: {path}")
    from ccerx.engine.formats.config import load_instruments
    specs = load_instruments(instruments)
    return str(path), specs, file_events(path, specs, notes)


def file_events(path: Path, specs, notes: list):
    """The events of an NDJSON events file; a bad line raises ValueError with its number."""
    from ccerx.engine.surveillance.stream import EventDecoder
    decoder = EventDecoder(specs)
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                event = decoder.decode(orjson.loads(line))
            except (ValueError, TypeError) as err:    # orjson's JSONDecodeError is a ValueError
                raise ValueError(f"{path}: line {number}: {err}") from None
            if event is not None:
                yield event
    from ccerx.scripts.tables import plural
    for kind, count in sorted(decoder.unknown.items()):
        notes.append(f"skipped {plural(count, 'event')} of type {kind!r}, unknown to this build")


def replay_journal(data_dir: Path, notes: list):
    """(genesis exchange, iterator of (command seq, command, events)) for a data directory,
    read-only: snapshot 0 (the genesis the directory was created with) and every journal
    record after it, through the same deterministic engine. A torn or damaged tail ends the
    replay where the journal stops being whole (said in `notes`); nothing is written."""
    from ccerx.engine.durable import journal as jr
    from ccerx.engine.durable import snapshot as snap
    from ccerx.engine.formats.binary import is_journal_path
    if not is_journal_path(data_dir):
        raise ValueError(f"{data_dir} is not a ccerx data directory (no journal-*.log in it)")
    snapshots = snap.list_snapshots(data_dir)
    if not snapshots or snapshots[0][0] != 0:
        raise ValueError(f"{data_dir}: no genesis snapshot (snapshot-0000000000000000.snap): "
                         f"the trading before the oldest snapshot cannot be replayed")
    try:
        _, exchange, _ = snap.restore(snapshots[0][1])
    except (snap.SnapshotError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{data_dir}: the genesis snapshot does not restore: {err}") from None
    scanned = jr.scan(data_dir)
    if scanned.torn is not None:
        notes.append(f"journal {scanned.torn}: surveilled up to command {scanned.last_seq}")

    def commands():
        apply = exchange.apply
        for record in scanned.records:
            seq = record.first_seq
            for row in record.command_rows():
                command = jr.decode_command(row)
                yield seq, command, apply(command)
                seq += 1
    return exchange, commands()


def directory_events(data_dir: Path, notes: list):
    exchange, commands = replay_journal(data_dir, notes)
    specs = list(exchange.specs.values())

    def events():
        for _, _, out in commands:
            yield from out
    return specs, events()


def simulation_source(scenario_path: str, days):
    """The in-process simulation's events, as the exchange emits them (the same seeded run
    as `ccerx simulate` with this scenario)."""
    from ccerx.scripts.simulate.run import Session
    from ccerx.scripts.simulate.scenario import load_scenario
    try:
        scenario = load_scenario(None if scenario_path == "default" else scenario_path, days=days)
    except (KeyError, TypeError) as err:
        raise ValueError(f"scenario: {err}") from None
    session = Session(scenario)
    exchange = session.venue.exchange
    specs = list(exchange.specs.values())
    collected: list = []
    apply = exchange.apply

    def recording(command):
        events = apply(command)
        collected.extend(events)
        return events
    session.venue.send = recording      # every command (issue() and end_of_day() too)
    print(f"simulating '{scenario.name}': {scenario.days} day(s), seed {scenario.seed}",
          file=sys.stderr)
    session.run()
    from ccerx.scripts.tables import plural
    label = f"simulation '{scenario.name}' ({plural(scenario.days, 'day')}, seed {scenario.seed})"
    return label, specs, collected


def load_disclosures(path) -> list:
    """Disclosure lines (sorted by time, stable), each checked; raises ValueError."""
    from ccerx.engine.surveillance.stream import disclosure_from_dict
    out = []
    try:
        lines = Path(path).read_bytes().splitlines()
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err.strerror}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(disclosure_from_dict(orjson.loads(line), 0))
        except (ValueError, TypeError) as err:
            raise ValueError(f"{path}: line {number}: {err}") from None
    return sorted(out, key=lambda d: d.ts)


def merge_disclosures(events, disclosures: list):
    """Each disclosure placed before the first event later than it, numbered with the seq of
    the event before it."""
    if not disclosures:
        yield from events
        return
    pending = iter(disclosures)
    upcoming = next(pending, None)
    last_seq = 0
    for event in events:
        while upcoming is not None and upcoming.ts < event.ts:
            yield upcoming._replace(seq=last_seq)
            upcoming = next(pending, None)
        yield event
        last_seq = getattr(event, "seq", last_seq)
    while upcoming is not None:
        yield upcoming._replace(seq=last_seq)
        upcoming = next(pending, None)


# ---------------------------------------------------------------------------- summary
def summary_text(label: str, count: int, alerts: list, args, relations: int, notes: list) -> str:
    from ccerx.engine.surveillance.model import ARTICLES, RULES
    from ccerx.scripts.tables import format_table, plural
    lines = [f"surveillance of {label}: {plural(count, 'event')}, {plural(len(alerts), 'alert')}",
             f"settings: {args.config or 'defaults'}; related accounts: "
             f"{plural(relations, 'relation')}" + (f" ({args.related})" if args.related else "")]
    lines += notes
    rows = []
    for rule in RULES:
        mine = [a for a in alerts if a.rule == rule]
        kinds: dict[str, int] = {}
        for a in mine:
            kinds[a.kind] = kinds.get(a.kind, 0) + 1
        rows.append([rule, ARTICLES[rule], f"{len(mine):,}",
                     ", ".join(f"{k} {n:,}" for k, n in sorted(kinds.items())) or "-"])
    lines += ["", format_table(["detector", "Art.", "alerts", "by kind"], rows, "llrl")]
    top = sorted(alerts, key=lambda a: (-a.score, a.alert_id))[:max(args.top, 0)]
    if top:
        lines += ["", f"top {len(top)} by score (1000 = at the threshold):"]
        lines.append(format_table(
            ["score", "id", "instrument", "accounts", "what"],
            [[f"{a.score:,}", a.alert_id, a.instrument, " ".join(a.accounts), a.text]
             for a in top], "rllll"))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- cases
def run_case(args) -> int:
    from ccerx.engine.surveillance.cases import CaseError, CaseStore
    from ccerx.scripts.tables import format_table
    if not args.case_args or args.case_args[0] not in CASE_ACTIONS:
        return fail(f"case needs an action: {', '.join(CASE_ACTIONS)}")
    action, rest = args.case_args[0], args.case_args[1:]
    if (action == "list") != (not rest) or len(rest) > 1:
        return fail("case list takes no id" if action == "list"
                    else f"case {action} needs one alert id")
    path = Path(args.out) / "cases.sqlite"
    if not path.is_file():
        return fail(f"no case store at {path} (run `ccerx surveil INPUT --out {args.out}` first)")
    operator = args.operator if args.operator is not None else getpass.getuser()
    with CaseStore(path, time.time_ns) as store:
        try:
            if action == "list":
                cases = store.cases(args.state, args.rule)
                if args.json:
                    print(orjson.dumps(cases).decode())
                    return 0
                print(format_table(["id", "state", "score", "instrument", "accounts", "note"],
                                   [[c["id"], c["state"], f"{c['score']:,}", c["instrument"],
                                     " ".join(c["accounts"]), c["note"].splitlines()[0]
                                     if c["note"] else ""] for c in cases], "llrlll")
                      if cases else "no cases")
                return 0
            if action == "show":
                case = store.case(rest[0])
            else:
                case = store.act(rest[0], action, operator, args.note)
        except CaseError as err:
            return fail(str(err))
    if args.json or action == "show":
        print(orjson.dumps(case, option=orjson.OPT_INDENT_2).decode())
    else:
        print(f"case {rest[0]}: {case['state']}" + (f" ({case['note']})" if case["note"] else ""))
    return 0
