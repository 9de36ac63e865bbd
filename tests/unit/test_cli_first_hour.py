"""What a newcomer hit in the first hour with `ccerx` (issue 10 item 5), one test each.

The command runs in process (`main([...])` with capsys) wherever it can; a running server is a
real `ccerx serve` subprocess (the start_serve fixture).
"""
from __future__ import annotations

import importlib.metadata
import json
from itertools import islice
from pathlib import Path

import orjson
import pytest

from ccerx.scripts.ccerx import main
from tests.serve_process import REPO

SAMPLES = REPO / "samples"


def run(capsys, *argv):
    """(exit status, stdout, stderr) of `ccerx ARGV...`; a usage error's SystemExit counts as
    its exit status."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def aligned(lines, header_word, column):
    """Whether the right-aligned column whose header ends in `header_word` ends at the same
    place in every row (`column`: the cell's index among the row's space-separated cells)."""
    end = lines[0].index(header_word) + len(header_word)
    for line in lines[1:]:
        cell = line.split()[column]
        start = end - len(cell)
        if line[start:end] != cell or (start and line[start - 1] != " "):
            return False
    return True


@pytest.fixture(scope="module")
def ledger_db(tmp_path_factory):
    """A ledger with a day of trades: the sample flow's first 3,000 commands, recovered."""
    base = tmp_path_factory.mktemp("ledger")
    flow = base / "flow.ndjson"
    with open(SAMPLES / "sample-flow.ndjson", "rb") as f:
        flow.write_bytes(b"".join(islice(f, 3000)))
    assert main(["recover", "--data-dir", str(base / "data"), "--accounts",
                 str(SAMPLES / "accounts.json"), "--feed", str(flow)]) == 0
    return base / "data" / "ledger.sqlite"


# ------------------------------------------------------------------------------ the front
def test_version(capsys):
    """The version, and whether the engine runs compiled (tests/unit/test_compiled_core.py)."""
    from ccerx.engine.native import status
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"ccerx {importlib.metadata.version('ccerx')} ({status()})"


def test_a_bad_flag_shows_the_subcommands_usage(capsys):
    code, _, err = run(capsys, "operator", "state", "--bogus")
    assert code == 2
    assert "usage: ccerx operator state" in err and "unrecognized arguments: --bogus" in err
    code, _, err = run(capsys, "ledger", "balances", "--db", "x", "--nope")
    assert code == 2 and "usage: ccerx ledger balances" in err


# ------------------------------------------------------------------------- missing folders
def test_recover_refuses_a_missing_data_directory_and_creates_nothing(tmp_path, capsys):
    typo = tmp_path / "dat"
    code, _, err = run(capsys, "recover", "--data-dir", typo)
    assert code == 2 and "no such data directory" in err and str(typo) in err
    assert not typo.exists()
    code, _, err = run(capsys, "recover", "--data-dir", tmp_path)     # a folder, no journal
    assert code == 2 and "not a ccerx data directory" in err
    assert list(tmp_path.iterdir()) == []


def test_operator_names_a_missing_data_directory(tmp_path, capsys):
    code, out, err = run(capsys, "operator", "--data-dir", tmp_path / "nope", "state")
    assert code == 2 and out == ""
    assert f"no such data directory: {tmp_path / 'nope'}" in err
    assert not (tmp_path / "nope").exists()


def test_ledger_consume_refuses_a_missing_directory(tmp_path, capsys):
    code, _, err = run(capsys, "ledger", "consume", "--db", tmp_path / "nope" / "l.sqlite",
                       "--exit-when-idle", "0.1")
    assert code == 2 and "no such directory" in err
    assert not (tmp_path / "nope").exists()


# ---------------------------------------------------------------------------------- ledger
def test_ledger_balances_of_an_unknown_account(ledger_db, capsys):
    code, out, err = run(capsys, "ledger", "balances", "--db", ledger_db, "--account", "NOPE")
    assert code == 1 and out == "" and "unknown account 'NOPE'" in err


def test_ledger_statement_validates_date_and_account(ledger_db, capsys):
    for bad in ("2024-13-40", "2024-1-2", "yesterday"):
        code, out, err = run(capsys, "ledger", "statement", "--db", ledger_db, "--date", bad)
        assert code == 2 and out == "" and "YYYY-MM-DD" in err and bad in err
    code, out, err = run(capsys, "ledger", "statement", "--db", ledger_db, "--account", "NOPE")
    assert code == 1 and "unknown account NOPE" in err


def test_ledger_statement_is_a_table_and_json_on_request(ledger_db, capsys):
    code, out, _ = run(capsys, "ledger", "statement", "--db", ledger_db, "--account", "ACC0001")
    assert code == 0
    assert "{" not in out and "'" not in out             # no Python dicts
    lines = out.splitlines()
    assert lines[1].startswith("   opening cash ") and "CCER-AFF " in lines[1]
    head = lines[2].split()
    assert head[:4] == ["trade", "side", "credit", "type"]
    assert aligned(lines[2:-1], "gross CNY", 5) and aligned(lines[2:-1], "qty t", 3)
    code, out, _ = run(capsys, "ledger", "statement", "--db", ledger_db, "--account", "ACC0001",
                       "--json")
    [statement] = json.loads(out)
    assert statement["account"] == "ACC0001" and statement["trades"]


def test_ledger_balances_table(ledger_db, capsys):
    code, out, _ = run(capsys, "ledger", "balances", "--db", ledger_db)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["account", "cash", "CNY"]
    assert aligned([lines[0]] + [l for l in lines[1:] if l.startswith("ACC")], "CNY", 1)


def test_ledger_db_may_come_before_or_after_the_action(ledger_db, capsys):
    before = run(capsys, "ledger", "--db", ledger_db, "check")
    after = run(capsys, "ledger", "check", "--db", ledger_db)
    assert before == after and before[0] == 0 and before[1].startswith("ok: ")
    code, _, err = run(capsys, "ledger", "check")
    assert code == 2 and "give --db FILE" in err


def test_ledger_check_counts_in_the_singular(tmp_path, capsys):
    from ccerx.engine.ledger.sqlite import SqliteLedger
    from tests.unit.ledger_contract import OPENING, instruction
    ledger = SqliteLedger(tmp_path / "one.sqlite")
    ledger.open_accounts(OPENING)
    ledger.deliver([instruction(1)])
    ledger.close()
    code, out, _ = run(capsys, "ledger", "check", "--db", tmp_path / "one.sqlite")
    assert code == 0 and out.startswith("ok: 1 settlement,")


# -------------------------------------------------------------------------------- operator
def test_operator_state_and_accounts_are_tables_json_on_request(tmp_path, start_serve, capsys):
    server = start_serve("--data-dir", str(tmp_path / "data"))
    data = tmp_path / "data"
    code, out, _ = run(capsys, "operator", "state", "--data-dir", data)    # option after
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("trading open")
    assert lines[1].split()[:3] == ["instrument", "delivers", "reference"]
    assert {line.split()[0] for line in lines[2:]} == {"CCER-AFF", "CCER-SOL", "CCER-OWF",
                                                       "CCER-MGV"}
    code, out, _ = run(capsys, "operator", "--control", server.control, "accounts")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["account", "type", "member"]
    assert "100,000,000.00" in out and aligned(lines, "cash CNY", 3)
    code, out, _ = run(capsys, "operator", "accounts", "--json", "--control", server.control)
    assert code == 0 and set(orjson.loads(out)["accounts"]) == {"EMIT01", "EMIT02", "HOLD01",
                                                                "HOLD02"}
    code, out, _ = run(capsys, "operator", "--json", "--data-dir", data, "state")
    assert code == 0 and orjson.loads(out)["state"]["trading_open"] is True
    code, out, err = run(capsys, "operator", "--control", server.control, "state", "--data-dir",
                         data)
    assert code == 2 and out == "" and "not both" in err


# ------------------------------------------------------------------------------ error nits
def test_a_directory_is_named_a_directory_not_a_missing_file(tmp_path, capsys):
    for argv in (["replay", tmp_path], ["convert", tmp_path, tmp_path / "x.npz"]):
        code, _, err = run(capsys, *argv)
        assert code == 2 and f"{tmp_path} is a directory" in err and "no such file" not in err
    code, _, err = run(capsys, "bench", tmp_path)
    assert code == 2 and "is a directory but not a data directory" in err


def test_every_path_is_named_once(tmp_path, capsys):
    flow = tmp_path / "flow.ndjson"
    flow.write_text('{"op":"eod"}\n')
    cases = [["replay", flow, "--accounts", tmp_path / "none.json"],
             ["bench", "--compare", tmp_path / "none.json", "--result", tmp_path / "r.json"],
             ["convert", "--from-lobster", tmp_path / "none.csv", "--instrument", "CCER-AFF",
              tmp_path / "out.ndjson"],
             ["serve", "--config", tmp_path / "none.toml", "--data-dir", tmp_path / "d"]]
    for argv in cases:
        code, _, err = run(capsys, *argv)
        assert code == 2, argv
        assert err.count("none.") == 1 and "Errno" not in err, err


def test_an_unwritable_events_out_is_a_clear_error_and_nothing_runs(tmp_path, capsys):
    flow = tmp_path / "flow.ndjson"
    flow.write_text('{"op":"eod"}\n')
    target = tmp_path / "missing" / "events.ndjson"
    code, out, err = run(capsys, "replay", flow, "--events-out", target)
    assert code == 2 and out == ""
    assert err.strip() == (f"ccerx replay: cannot write --events-out {target}: No such file or "
                           f"directory (there is no folder {target.parent})")


def test_malformed_lines_are_reported_with_their_line_numbers(tmp_path, capsys):
    flow = tmp_path / "flow.ndjson"
    flow.write_text('{"op":"eod"}\n\nnot json\n{"op":"eod"}\n[1]\n')
    code, out, err = run(capsys, "replay", flow, "--json")
    assert code == 0
    assert "line 3: line is not valid JSON" in err and "line 5: line is not a JSON object" in err
    summary = json.loads(out)
    assert (summary["malformed_lines"], summary["first_malformed_lines"]) == (2, [3, 5])
    code, _, err = run(capsys, "recover", "--data-dir", tmp_path / "data", "--accounts",
                       SAMPLES / "accounts.json", "--feed", flow, "--no-ledger")
    assert code == 0 and "line 3: line is not valid JSON" in err


# ---------------------------------------------------------------------------- bench compare
@pytest.fixture(scope="module")
def bench_flow(tmp_path_factory):
    from ccerx.benchmarks.flows import write_flow
    path = tmp_path_factory.mktemp("bench") / "flow.npz"
    write_flow(path, 8, 3_000)
    return path


def test_bench_compare_runs_at_the_baselines_offered_rates(tmp_path, bench_flow, capsys):
    base, again = tmp_path / "base", tmp_path / "again"
    assert run(capsys, "bench", bench_flow, "--out", base, "--no-plots", "--rates",
               "30000,45000", "--open-loop-commands", "1200")[0] == 0
    # no --rates: by default they would derive from this run's own maximum
    code, _, err = run(capsys, "bench", bench_flow, "--out", again, "--no-plots",
                       "--compare", base / "result.json", "--tolerance", "100")
    assert code == 0, err
    assert "baseline's offered rates: 30000, 45000" in err
    runs = json.loads((again / "result.json").read_text())["open_loop"]
    assert [(r["offered_per_s"], r["commands"]) for r in runs] == [(30000.0, 1200),
                                                                   (45000.0, 1200)]


def test_bench_compare_says_what_it_did_not_compare(tmp_path, bench_flow, capsys):
    from ccerx.benchmarks.bench import compare, uncompared_open_loop
    base, other = tmp_path / "base", tmp_path / "other"
    assert run(capsys, "bench", bench_flow, "--out", base, "--no-plots", "--rates", "30000",
               "--open-loop-commands", "1000")[0] == 0
    assert run(capsys, "bench", bench_flow, "--out", other, "--no-plots", "--rates", "20000",
               "--open-loop-commands", "1000")[0] == 0
    code, _, err = run(capsys, "bench", "--compare", base / "result.json", "--result",
                       other / "result.json", "--tolerance", "100")
    assert code == 0
    assert "open loop at 30,000/s x 1,000 commands not compared" in err
    # same rate, another length: not the same measurement either
    b = json.loads((base / "result.json").read_text())
    c = json.loads((base / "result.json").read_text())
    c["open_loop"][0]["commands"] = 500
    c["open_loop"][0]["latency_ns"]["p99"] = b["open_loop"][0]["latency_ns"]["p99"] * 100
    assert not [p for p in compare(b, c, 0.2) if "open loop" in p]
    assert uncompared_open_loop(b, c)


def test_bench_compare_refuses_another_flow_before_running(tmp_path, bench_flow, capsys):
    from ccerx.benchmarks.flows import write_flow
    base = tmp_path / "base"
    assert run(capsys, "bench", bench_flow, "--out", base, "--no-plots", "--rates", "30000",
               "--open-loop-commands", "500")[0] == 0
    other_flow = tmp_path / "other.npz"
    write_flow(other_flow, 9, 3_000)
    code, _, err = run(capsys, "bench", other_flow, "--out", tmp_path / "out", "--compare",
                       base / "result.json")
    assert code == 2 and "not comparable" in err and "different flows" in err
    assert not (tmp_path / "out").exists()
    code, _, err = run(capsys, "bench", bench_flow, "--out", tmp_path / "out", "--compare",
                       base / "result.json", "--limit", "2000")
    assert code == 2 and "--limit" in err and not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------- outputs
def test_outputs_default_to_a_git_ignored_folder():
    import subprocess
    from ccerx.scripts.ccerx import build_parser
    parser = build_parser()
    written = [Path(parser.parse_args(["bench", "flow.npz"]).out) / "result.json",
               Path(parser.parse_args(["simulate"]).out) / "report.html",
               # what the README's examples write into the checkout's root
               Path("bench-out/result.json"), Path("flow.npz"), Path("flow.ndjson")]
    for path in written:
        assert not path.is_absolute()
        ignored = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=REPO)
        assert ignored.returncode == 0, f"{path} is not git-ignored"
    assert Path(parser.parse_args(["bench", "flow.npz"]).out).parts[0] == "out"


# --------------------------------------------------------------------------------- LOBSTER
LOBSTER = SAMPLES / "lobster"
LOBSTER_MESSAGES = LOBSTER / "CCER-AFF_2024-01-22_34200000_57600000_message_5.csv"
LOBSTER_BOOK = LOBSTER / "CCER-AFF_2024-01-22_34200000_57600000_orderbook_5.csv"


def test_lobster_import_wants_the_credit_type(tmp_path, capsys):
    out = tmp_path / "out.ndjson"
    code, _, err = run(capsys, "convert", "--from-lobster", LOBSTER_MESSAGES, out)
    assert code == 2 and "give --instrument" in err and "CCER-AFF" in err
    assert not out.exists()


def test_the_sample_lobster_pair_is_ours_and_imports(tmp_path, capsys):
    import runpy
    make = runpy.run_path(str(LOBSTER / "make_sample.py"))["make"]
    messages, book = make(tmp_path / "again")
    assert messages.read_bytes() == LOBSTER_MESSAGES.read_bytes()   # made by the script
    assert book.read_bytes() == LOBSTER_BOOK.read_bytes()
    rows = LOBSTER_MESSAGES.read_text().splitlines()
    assert 200 <= len(rows) <= 1000
    executions = sum(1 for row in rows if row.split(",")[1] == "4")
    out = tmp_path / "aff.ndjson"
    code, text, _ = run(capsys, "convert", "--from-lobster", LOBSTER_MESSAGES, "--orderbook",
                        LOBSTER_BOOK, "--instrument", "CCER-AFF", out)
    assert code == 0 and f"wrote {len(rows)} commands" in text
    code, text, _ = run(capsys, "replay", out, "--json")
    summary = json.loads(text)
    assert (summary["trades"], summary["rejects"]) == (executions, 0)


# ---------------------------------------------------------------------------------- report
@pytest.fixture(scope="module")
def simulation(tmp_path_factory):
    """A small two-day simulation's report folder, and the axis labels of every chart."""
    import matplotlib.figure
    base = tmp_path_factory.mktemp("simulation")
    scenario = base / "tiny.toml"
    scenario.write_text("[agents]\nemitters = 20\nproject_owners = 4\nmarket_makers = 4\n"
                        "noise_traders = 20\n")
    labels = {}
    savefig = matplotlib.figure.Figure.savefig

    def recording_savefig(fig, path, *args, **kwargs):     # watches; the real savefig runs
        labels[Path(path).name] = [(ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes]
        return savefig(fig, path, *args, **kwargs)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(matplotlib.figure.Figure, "savefig", recording_savefig)
        assert main(["simulate", "--scenario", str(scenario), "--days", "2", "--seed", "3",
                     "--out", str(base / "out"), "--quiet", "--ledger", "none"]) == 0
    return base / "out", labels


def test_report_headings_are_not_repeated(simulation):
    import re
    page = (simulation[0] / "report.html").read_text()
    headings = [re.sub(r"<[^>]+>", "", h) for h in re.findall(r"<h[1-6]>(.*?)</h[1-6]>", page)]
    words = [" ".join(w.rstrip("s") for w in re.findall(r"[a-z]+", h.lower())) for h in headings]
    assert len(set(words)) == len(words), headings


def test_report_charts_have_axis_labels(simulation):
    _, labels = simulation
    for chart in ("stylized.png", "emitters.png"):
        for xlabel, ylabel in labels[chart]:
            assert xlabel and ylabel, (chart, labels[chart])
    # panels over one time axis: every y axis, and the time axis under the bottom panel
    assert all(y for _, y in labels["spread_depth.png"]) and labels["spread_depth.png"][-1][0]
    prices = [x for x, y in labels["price_volume.png"] if "CNY/t" in y]   # not the volume twins
    assert len(prices) == 4 and prices[-1]


def test_report_money_has_thousands_separators(simulation):
    import re
    page = (simulation[0] / "report.html").read_text()
    money = re.findall(r"<td>(-?[\d,]+\.\d\d)</td>", page)
    assert money and all(re.fullmatch(r"-?\d{1,3}(,\d{3})*\.\d\d", m) for m in money), money[:5]
    assert any("," in m for m in money)


def test_heavy_tails_are_measured_on_trade_to_trade_returns(simulation):
    import csv
    import numpy as np
    out, _ = simulation
    page = (out / "report.html").read_text()
    assert "excess kurtosis of trade-to-trade log returns" in page
    summary = json.loads((out / "summary.json").read_text())
    with (out / "trades.csv").open() as f:
        trades = list(csv.DictReader(f))
    for symbol, facts in summary["stylized"].items():
        last = {}                     # one price per (session, ts): the fills of one order
        for t in sorted((t for t in trades if t["instrument"] == symbol),
                        key=lambda t: (int(t["ts_ns"]), int(t["trade_id"]))):
            session = (t["day"], t["time"][11:16] >= "12:00")
            last[(session, int(t["ts_ns"]))] = float(t["price"])
        keys = list(last)
        returns = np.array([np.log(last[b] / last[a]) for a, b in zip(keys, keys[1:])
                            if a[0] == b[0]])
        z = (returns - returns.mean()) / returns.std()
        assert facts["heavy-tailed returns"]["value"] == pytest.approx((z ** 4).mean() - 3)


# ------------------------------------------------------------------------- long silences
def test_bench_e2e_says_what_it_is_doing(tmp_path, capsys):
    flow = tmp_path / "flow.ndjson"
    assert main(["gen-flow", "--seed", "1", "--commands", "400", "--out", str(flow)]) == 0
    code, out, err = run(capsys, "bench", flow, "--e2e", "--e2e-rates", "400",
                         "--e2e-commands", "300", "--out", tmp_path / "out", "--no-plots")
    assert code == 0, err
    assert "each run starts a fresh `ccerx serve`" in err
    assert "e2e run 1/1 at 400/s, requests sent on schedule: " in err     # scripts/progress.py
    assert "e2e run 1/1 at 400/s: " in err and "acknowledged" in err


def test_serve_logs_logons_and_failed_logons_at_its_default_level(tmp_path, start_serve):
    import time
    from tests.fixclient import Broker, s
    server = start_serve("--data-dir", str(tmp_path / "data"))      # no --log-level
    good = Broker("BROKER01", server.port)
    assert s(good.logon("demo01", reset=True), 35) == "A"
    good.logout()
    good.close()
    bad = Broker("BROKER02", server.port)
    bad.logon("not-the-password-x7", reset=True)
    bad.close()
    deadline = time.monotonic() + 10
    wanted = ("BROKER01 logged on", "BROKER01 logged out", "failed logon for BROKER02")
    while time.monotonic() < deadline and not all(w in server.log_text() for w in wanted):
        time.sleep(0.05)
    log = server.log_text()
    assert all(w in log for w in wanted), log
    assert "not-the-password-x7" not in log and "demo01" not in log


def test_serve_start_line_says_whether_the_market_is_open(tmp_path, start_serve):
    import re
    server = start_serve("--data-dir", str(tmp_path / "data"), "--hours", "cn")
    assert re.search(r"hours cn: market (OPEN now \(.+ until|CLOSED now \(.+; opens) "
                     r"\w{3} \d{4}-\d\d-\d\d \d\d:\d\d CST\); control ", server.start_line)
    plain = start_serve("--data-dir", str(tmp_path / "data2"), log_name="plain.log")
    assert "hours" not in plain.start_line


def test_market_now_follows_the_calendar():
    from argparse import Namespace
    from ccerx.engine.core.calendar import TradingCalendar
    from ccerx.scripts.cmd_serve import market_now
    cn = Namespace(hours="cn", holiday_dates=())
    monday = TradingCalendar().at(__import__("datetime").date(2026, 12, 7), 10 * 60)   # 10:00
    assert market_now(cn, monday) == ("hours cn: market OPEN now (morning session until "
                                      "Mon 2026-12-07 11:30 CST); ")
    assert market_now(cn, monday - 2 * 86_400 * 10**9) == (     # Saturday
        "hours cn: market CLOSED now (weekend; opens Mon 2026-12-07 09:30 CST); ")
    assert market_now(Namespace(hours="always"), monday) == ""


def test_ledger_consume_says_where_it_listens_and_what_it_applied(tmp_path, capsys):
    import threading
    import time
    from ccerx.engine.durable.exchange import DurableExchange
    from ccerx.engine.formats.config import load_accounts
    from ccerx.engine.formats.ndjson import parse_command
    from ccerx.engine.ledger.mqtt import MqttPublisher
    from tests.integration.durable_helpers import (BROKER, forget_session, service_or_skip,
                                                   unique_prefix)
    service_or_skip(*BROKER, "Mosquitto")
    prefix, client_id = unique_prefix(), f"first-hour-{time.time_ns()}"
    accounts = SAMPLES / "accounts.json"
    with open(SAMPLES / "sample-flow.ndjson", "rb") as f:
        commands = [parse_command(line) for line in islice(f, 400)]
    db = tmp_path / "ledger.sqlite"
    outcome = {}

    def publish():                      # the engine's side, once the consumer has its file
        deadline = time.monotonic() + 20
        while not db.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        publisher = MqttPublisher(*BROKER, client_id=f"pub-{client_id}", prefix=prefix)
        with DurableExchange(tmp_path / "engine", accounts=load_accounts(accounts), ledger=None,
                             adapters={"mqtt": publisher}, log=lambda text: None) as ex:
            ex.apply_many(commands)
            outcome["settled"] = ex.wait_settled(30)
            outcome["instructions"] = ex.outbox.last_seq
    sender = threading.Thread(target=publish)
    sender.start()
    try:
        code, _, err = run(capsys, "ledger", "consume", "--broker", "%s:%d" % BROKER, "--db", db,
                           "--accounts", accounts, "--prefix", prefix, "--client-id", client_id,
                           "--report-every", "0.5", "--exit-when-idle", "4")
    finally:
        sender.join(60)
        forget_session(*BROKER, client_id)
    assert code == 0 and outcome["settled"] is True, err
    n = outcome["instructions"]
    assert f"connected to {BROKER[0]}:{BROKER[1]}, subscribed to {prefix}/settle/+" in err
    assert "so far " in err and f"ledger at instruction {n:,}" in err     # while running
    assert f"applied {n}," in err                                          # and at the end


def test_recover_refuses_a_malformed_mqtt_address_before_touching_anything(tmp_path, capsys):
    from ccerx.scripts.ccerx import main
    accounts = tmp_path / "accounts.json"
    accounts.write_text('{"accounts": [{"account": "A1", "cash": "100.00"}]}')
    for bad in ("localhost:mqtt", "host:99999", "h:"):
        assert main(["recover", "--data-dir", str(tmp_path / "d"), "--accounts", str(accounts),
                     "--mqtt", bad]) == 2
        assert f"--mqtt must be HOST:PORT, not {bad!r}" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
