"""The operator console in a real browser (Debian's Chromium driven by Playwright) against a
running `ccerx serve --console`: log in (a wrong password is refused), watch a trade made over
FIX appear on the live tape without reloading, see the market overview, a spoofing alert raised
live from a FIX order cancelled within seconds and a wash-trade alert from related accounts
trading with each other, halt trading from the console (brokers are told
over FIX, the action is journaled, logged with the operator's name and named in `ccerx audit
export`), an action without the CSRF token refused, and a member's kill switch pressed
(with a confirmation) cancelling its orders over FIX.

With CCERX_REQUIRE_SERVICES=1 (CI, which installs chromium) a missing browser is a failure;
elsewhere a skip. CCERX_CONSOLE_SCREENSHOT=PATH saves the overview page there."""
from __future__ import annotations

import os
import re

import orjson
import pytest

from ccerx.gateway.config import hash_password
from tests.fixclient import Broker, now, s

CHROMIUM = "/usr/bin/chromium"
TIMEOUT_MS = 10_000


def _require_browser():
    problem = None
    try:
        from playwright.sync_api import sync_playwright  # noqa: F401
    except ImportError:
        problem = "the playwright package is not installed (pip install -e '.[dev]')"
    if problem is None and not os.path.exists(CHROMIUM):
        problem = f"{CHROMIUM} is missing (apt-get install -y chromium; .ci/run installs it)"
    if problem is not None:
        if os.environ.get("CCERX_REQUIRE_SERVICES") == "1":
            pytest.fail(problem)
        pytest.skip(problem)


@pytest.fixture
def console(start_serve, tmp_path):
    _require_browser()
    operators = tmp_path / "operators.toml"
    operators.write_text(f'[[operator]]\nname = "wang"\ndisplay = "王芳"\n'
                         f'password = "{hash_password("op-secret")}"\n', encoding="utf-8")
    related = tmp_path / "related.toml"
    related.write_text('[[relation]]\nkind = "beneficial_owner"\nname = "张三"\n'
                       'accounts = ["EMIT01", "HOLD02"]\n', encoding="utf-8")
    data = tmp_path / "data"
    server = start_serve("--data-dir", str(data), "--console", "127.0.0.1:0",
                         "--console-operators", str(operators), "--console-related", str(related))
    url = re.search(r"console (http://[\d.]+:\d+);", server.start_line).group(1)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                             args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 800}, locale="zh-CN")
            page.set_default_timeout(TIMEOUT_MS)
            yield server, url, page, data
        finally:
            browser.close()


def _log_in(page, url):
    page.goto(url + "/")
    assert page.url.endswith("/login")
    page.fill("input[name=name]", "wang")
    page.fill("input[name=password]", "wrong")
    page.click("#login")
    page.wait_for_selector("#error")
    assert "Wrong name or password" in page.inner_text("#error")
    page.fill("input[name=name]", "wang")
    page.fill("input[name=password]", "op-secret")
    page.click("#login")
    page.wait_for_selector("#operator")
    assert page.inner_text("#operator") == "王芳"


def _live(page):
    page.wait_for_function("window.consoleEvents && window.consoleEvents.readyState === 1")


def test_log_in_and_see_a_fix_trade_appear_live(console):
    server, url, page, data = console
    _log_in(page, url)
    page.goto(url + "/tape")
    _live(page)
    assert page.locator("#tape tr").count() == 0
    seller, buyer = Broker("BROKER02", server.port), Broker("BROKER01", server.port)
    seller.logon("demo02", reset=True)
    buyer.logon("demo01", reset=True)
    seller.new_order("s1", "HOLD02", "2", 10, "62.00")
    seller.expect("8")
    buyer.new_order("b1", "EMIT01", "1", 10, "62.00")
    buyer.expect("8", where=lambda m: s(m, 150) == "F")
    # the trade arrives over the event stream: a fresh row, no reload
    row = page.wait_for_selector("#tape tr.new")
    assert row.query_selector(".price").inner_text() == "62.00"
    assert "EMIT01" in row.inner_text() and "HOLD02" in row.inner_text()
    seller.new_order("s2", "HOLD02", "2", 20, "62.50")    # rests: the best ask
    buyer.new_order("b2", "EMIT01", "1", 30, "61.80")     # rests: the best bid
    seller.expect("8")
    buyer.expect("8", where=lambda m: s(m, 11) == "b2")
    page.goto(url + "/")
    page.wait_for_selector("tr[data-symbol='CCER-AFF'] td.last:has-text('62.00')")
    assert "开市 open" in page.inner_text("#status")
    row = page.inner_text("tr[data-symbol='CCER-AFF']")
    assert "61.80" in row and "62.50" in row and "620.00" in row   # bid, ask, turnover
    page.wait_for_selector("#relays:has-text('ledger')")      # the ledger relay's progress
    page.goto(url + "/book/CCER-AFF")
    page.wait_for_selector("#asks td:has-text('62.50')")
    assert page.inner_text("#bids td >> nth=0") == "61.80"
    page.goto(url + "/")
    page.wait_for_selector("tr[data-symbol='CCER-AFF'] td.last:has-text('62.00')")
    shot = os.environ.get("CCERX_CONSOLE_SCREENSHOT")
    if shot:
        page.screenshot(path=shot, full_page=True)
    seller.logout()
    buyer.logout()


def test_alert_from_fix_orders_halt_from_the_console_and_csrf(console):
    server, url, page, data = console
    _log_in(page, url)
    page.goto(url + "/alerts")
    _live(page)
    broker = Broker("BROKER01", server.port)
    broker.logon("demo01", reset=True)
    # a large bid shown and pulled within seconds: Art.44(4), raised live
    broker.new_order("big", "EMIT01", "1", 6_000, "61.00")
    broker.expect("8")
    broker.send("F", (41, "big"), (11, "big-x"), (55, "CCER-AFF"), (54, "1"), (60, now()))
    broker.expect("8", where=lambda m: s(m, 150) == "4")
    row = page.wait_for_selector("tr[data-alert^='spoofing-']")
    assert "EMIT01" in row.inner_text() and "44(4)" in row.inner_text()
    # a constructed wash-trade flow: related accounts (one beneficial owner, two brokers)
    # trading with each other twice, Art.44(2)
    other = Broker("BROKER02", server.port)
    other.logon("demo02", reset=True)
    for n in (1, 2):
        other.new_order(f"w-s{n}", "HOLD02", "2", 10, "62.00")
        other.expect("8")
        broker.new_order(f"w-b{n}", "EMIT01", "1", 10, "62.00")
        broker.expect("8", where=lambda m: s(m, 11) == f"w-b{n}" and s(m, 150) == "F")
    wash = page.wait_for_selector("tr[data-alert^='wash-']")
    assert "张三" in wash.inner_text() and "44(2)" in wash.inner_text()
    assert "EMIT01 HOLD02" in wash.inner_text()
    other.logout()
    page.once("dialog", lambda dialog: dialog.accept("已核实 reviewed"))
    page.locator("tr[data-alert^='spoofing-'] button:has-text('Close')").click()
    page.wait_for_selector("tr[data-alert^='spoofing-'] td.state:has-text('closed')")
    # halt from the console: confirmed, journaled, told to the broker over FIX
    page.goto(url + "/control")
    page.fill("#note", "系统检查")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#halt")
    page.wait_for_selector("#status.halted")
    status = broker.expect("h")
    assert s(status, 340) == "1"                 # TradSesStatus halted
    actions = [orjson.loads(line) for line in (data / "console-actions.ndjson").read_bytes().splitlines()]
    assert any(a["operator"] == "wang" and a["request"].get("halt") is True and a["ok"]
               for a in actions)
    assert any(a["operator"] == "wang" and a["request"].get("case", "").startswith("spoofing-")
               for a in actions)
    # a deposit from the console: the same journaled command, owned by the operator
    page.fill("#deposit_id", "入金-1")
    page.fill("#account", "EMIT02")
    page.fill("#amount", "1000.00")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#deposit")
    page.wait_for_selector("#deposit_result:has-text('deposited')")
    page.fill("#deposit_id", "入金-1")                 # the same id again: refused by the engine
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#deposit")
    page.wait_for_selector("#deposit_result:has-text('refused')")
    assert "already applied" in page.inner_text("#deposit_result")
    # the audit trail names the console's operator on the halt (read from the running
    # server's data directory, which it leaves as it is)
    import csv
    import datetime as dt
    from ccerx.scripts.ccerx import main
    today = dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).date().isoformat()
    out = data.parent / "audit"
    assert main(["audit", "export", "--date", today, "--data-dir", str(data), "--out", str(out)]) == 0
    with (out / f"audit-{today}.csv").open(encoding="utf-8", newline="") as f:
        halts = [r for r in csv.DictReader(f) if r["event"] == "status" and r["reason"] == "halt"]
        f.seek(0)
        deposits = [r for r in csv.DictReader(f) if r["event"] == "deposited"]
    assert [(r["operator"], r["text"]) for r in halts] == [("console:wang", "系统检查")]
    assert [(r["operator"], r["deposit_id"], r["amount"]) for r in deposits] == [
        ("console:wang", "入金-1", "1000.00")]
    # an action without the session's CSRF token is refused and changes nothing
    refused = page.request.post(url + "/api/operator", data='{"op":"status","open":true}',
                                headers={"Content-Type": "application/json"})
    assert refused.status == 403
    state = page.request.get(url + "/api/state").json()
    assert state["trading_open"] is False and state["halted"] is True
    # and without a session nothing is served
    page.context.clear_cookies()
    assert page.request.get(url + "/api/state").status == 401
    broker.logout()


def test_a_members_kill_switch_from_the_console_cancels_its_orders_over_fix(console):
    server, url, page, data = console
    _log_in(page, url)
    broker = Broker("BROKER01", server.port)
    broker.logon("demo01", reset=True)
    for cl in ("k1", "k2"):
        broker.new_order(cl, "EMIT01", "1", 10, "61.00")
        assert s(broker.expect("8"), 150) == "0"
    page.goto(url + "/accounts")
    page.wait_for_selector("tr[data-member='BROKER01']")
    questions = []
    page.once("dialog", lambda dialog: (questions.append(dialog.message), dialog.dismiss()))
    page.click("tr[data-member='BROKER01'] button[data-op='kill']")
    assert questions and "BROKER01" in questions[0]          # dismissed: nothing happened
    broker.new_order("k3", "EMIT01", "1", 10, "61.00")
    assert s(broker.expect("8"), 150) == "0"
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("tr[data-member='BROKER01'] button[data-op='kill']")
    page.wait_for_selector("tr[data-member='BROKER01'] td.restriction:has-text('no orders')")
    news = broker.expect("B")
    assert s(news, 148) == "kill switch"
    cancelled = [broker.expect("8") for _ in range(3)]
    assert sorted((s(m, 11), s(m, 150)) for m in cancelled) == [("k1", "4"), ("k2", "4"),
                                                                 ("k3", "4")]
    broker.new_order("k4", "EMIT01", "1", 10, "61.00")
    assert "restricted" in s(broker.expect("8"), 58)
    page.goto(url + "/alerts")                 # the risk notices list the kill
    page.wait_for_selector("#notices tr:has-text('member BROKER01')")
    assert "kill" in page.inner_text("#notices")
    page.goto(url + "/accounts")
    page.wait_for_selector("tr[data-member='BROKER01'] td.restriction:has-text('no orders')")
    actions = [orjson.loads(line) for line in (data / "console-actions.ndjson").read_bytes().splitlines()]
    assert any(a["operator"] == "wang" and a["request"] == {"op": "kill", "member": "BROKER01"}
               and a["ok"] for a in actions)
    # release it: new orders are accepted again
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("tr[data-member='BROKER01'] button[data-op='unrestrict']")
    assert s(broker.expect("B"), 148) == "restriction lifted"
    broker.new_order("k5", "EMIT01", "1", 10, "61.00")
    assert s(broker.expect("8"), 150) == "0"
    broker.logout()


def test_a_case_id_with_quotes_is_data_not_script(console):
    """A case id is put in the page as data: a quote in it (HTML-escaped as &#39;, which an
    attribute decodes back) must not end a JavaScript string in an onclick handler. The
    /api/cases answer is replaced with such an id; the page's own script handles it."""
    server, url, page, data = console
    _log_in(page, url)
    evil = "x');window.pwned=1;('"
    case = {"id": evil, "rule": "spoofing", "article": "44(4)", "instrument": "CCER-AFF",
            "accounts": ["EMIT01"], "score": 1, "state": "open", "note": "", "text": "t",
            "evidence": []}
    posted = []
    page.route("**/api/cases", lambda route: route.fulfill(
        status=200, content_type="application/json", body=orjson.dumps([case]).decode()))
    page.route("**/api/cases/*", lambda route: (posted.append(route.request.url),
                                                route.fulfill(status=200,
                                                              content_type="application/json",
                                                              body='{"ok":true,"state":"x"}')))
    page.goto(url + "/alerts")
    page.locator("#cases button:has-text('Review')").click()
    page.wait_for_function("document.getElementById('result').textContent.length > 0")
    assert page.evaluate("window.pwned") is None
    assert page.inner_text("#result") == "已更新 updated: " + evil
    assert len(posted) == 1 and posted[0].endswith("/api/cases/x')%3Bwindow.pwned%3D1%3B('")


def test_the_market_view_says_what_each_instrument_delivers(console):
    # issue 11: a listing shows its project and vintage (and that it trades from the next
    # trading day, Art.17), a contract its credit type
    server, url, page, data = console
    from concurrent.futures import ThreadPoolExecutor
    from ccerx.gateway.control import operator_request_sync
    with ThreadPoolExecutor(1) as pool:      # (playwright's event loop runs in this thread)
        [listed] = pool.submit(operator_request_sync, server.control, [
            {"op": "list", "symbol": "AFF-0001-2023", "credit_type": "afforestation",
             "project": "CCER-14-2024-0001", "vintage": 2023, "ref_price": "62.00"}]).result()
    assert listed["ok"] is True, listed
    _log_in(page, url)
    page.wait_for_selector("tr[data-symbol='AFF-0001-2023']")
    row = page.inner_text("tr[data-symbol='AFF-0001-2023']")
    assert "CCER-14-2024-0001 2023" in row and "次日可交易" in row
    assert "afforestation" in page.inner_text("tr[data-symbol='CCER-AFF']")
    assert "交割 Delivers" in page.inner_text("table")
