"""The dashboard in a real headless Chromium (selenium) against a real `vlmtrader run` (paper-sim,
the quick ML bundle, explanations on), plus its HTTP surface hit with real requests.

One daemon and one browser serve the module. Screenshots go to the module's tmp dir."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration import browser
from tests.integration.daemon_process import DaemonProcess
from tests.integration.e2e_helpers import (
    API_AUTH,
    API_TOKEN,
    e2e_config,
    journal_path,
    log_events,
    running_daemon,
    status_json,
    until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]
SYMBOLS = {"SIM0", "SIM1", "SIM2"}


class Site:
    """The running daemon, an httpx client and a Chromium on its dashboard."""

    def __init__(
        self, daemon: DaemonProcess, url: str, http: httpx.Client, driver: Any, shots: Path
    ):
        self.daemon = daemon
        self.url = url
        self.http = http
        self.driver = driver
        self.shots = shots

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def wait(self, script: str, *, what: str, timeout: float = 30.0) -> Any:
        """Poll a JS expression in the page until it is truthy; returns its value."""
        found: list[Any] = []

        def seen() -> bool:
            found[:] = [self.js(f"return ({script});")]
            return bool(found[0])

        until(seen, daemon=self.daemon, timeout=timeout, what=what)
        return found[0]

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def open_page(self) -> None:
        self.driver.get(self.url)
        self.wait("document.body.dataset.loaded === 'true'", what="first paint")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    problem = browser.missing()
    if problem is not None:
        pytest.fail(problem)
    from tests.daemon.ml_helpers import quick_bundle

    tmp_path = tmp_path_factory.mktemp("dashboard")
    shutil.copytree(quick_bundle(), tmp_path / "state" / "bundles" / "live")
    extra = {
        "scorer": {"kind": "ml", "bundle": "bundles/live"},
        "strategy": {"hold_bars": 3, "enter_threshold": 0.52, "min_confidence": 0.02},
    }
    config = e2e_config(tmp_path, api=True, speed=600, symbols=3, extra=extra)
    with running_daemon(config, tmp_path) as daemon, browser.chromium() as driver:
        (started,) = log_events(daemon, "api.started")
        url = f"http://127.0.0.1:{started['port']}"
        with httpx.Client(base_url=url, timeout=30) as http:
            # Something to show: orders in the journal and a position open.
            until(lambda: bool(status_json(http)["positions"]), daemon=daemon, timeout=90,
                  what="an open position")  # fmt: skip
            yield Site(daemon, f"{url}/", http, driver, tmp_path)


def order_ids(site: Site) -> list[str]:
    return list(site.js("return [...document.querySelectorAll('#orders tr[data-order]')]"
                        ".map((r) => r.dataset.order);"))  # fmt: skip


def test_page_when_loaded_then_no_console_errors_and_positions_orders_and_candles_shown(
    site: Site,
) -> None:
    site.open_page()
    site.wait("document.querySelectorAll('#positions tr:not(.empty)').length > 0", what="positions")
    site.wait("document.querySelectorAll('#orders tr[data-order]').length > 0", what="orders")
    site.wait("document.getElementById('live').textContent === 'live'", what="the event stream")
    charts = site.wait("document.querySelectorAll('#charts canvas').length", what="candle charts")
    assert charts > 0
    journal_ids = {o["client_order_id"] for o in site.http.get("/api/orders").json()["orders"]}
    assert set(order_ids(site)) & journal_ids
    positions = site.js("return [...document.querySelectorAll('#positions tr')]"
                        ".map((r) => [r.cells[0].textContent, Number(r.cells[1].textContent)]);")  # fmt: skip
    assert positions
    assert all(s in SYMBOLS and q != 0 for s, q in positions), positions
    assert (
        site.js("return document.getElementById('bundle').textContent;")
        == status_json(site.http)["bundle_id"]
    )
    site.shot("dashboard-light")
    assert browser.console_errors(site.driver) == []


def test_new_order_when_the_daemon_trades_then_its_row_appears_without_a_reload(site: Site) -> None:
    site.open_page()
    site.js("window.__sameDocument = true;")
    before = set(order_ids(site))
    # The quick bundle holds its first positions: a flatten (HTTP, with the token) makes the
    # daemon close them, and its strategy enters again on the next bar; both reach the page live.
    flattened = site.http.post("/control/flatten", json={"reason": "test"}, headers=API_AUTH)
    assert flattened.status_code == 200, flattened.text
    site.wait("[...document.querySelectorAll('#orders tr[data-order]')]"
              f".some((r) => !{sorted(before)!r}.includes(r.dataset.order))",
              what="a new order row", timeout=60)  # fmt: skip
    assert site.js("return window.__sameDocument === true;")  # no reload happened
    new = [i for i in order_ids(site) if i not in before]
    journaled = {
        o["client_order_id"]
        for o in site.http.get("/api/orders", params={"limit": 1000}).json()["orders"]
    }
    assert new
    assert set(new) <= journaled
    assert browser.console_errors(site.driver) == []


def test_explanation_when_an_order_is_clicked_then_opens_with_its_chart_image(site: Site) -> None:
    site.open_page()
    explained: list[str] = []

    def one_explained() -> bool:
        for coid in order_ids(site):
            if site.http.get(f"/orders/{coid}/explain").status_code == 200:
                explained.append(coid)
                return True
        return False

    until(one_explained, daemon=site.daemon, timeout=60, what="an order with an explanation")
    coid = explained[0]
    site.js("document.querySelector(`#orders tr[data-order='${arguments[0]}']`).click();", coid)
    width = site.wait("document.getElementById('explain-chart').complete && "
                      "document.getElementById('explain-chart').naturalWidth", what="chart image")  # fmt: skip
    assert width > 0
    assert not site.js("return document.getElementById('explain').hidden;")
    assert site.js("return document.getElementById('explain-order').textContent;") == coid
    doc = site.http.get(f"/orders/{coid}/explain").json()
    src = site.js("return document.getElementById('explain-chart').getAttribute('src');")
    assert src == doc["chart"]["url"]
    texts = site.js(
        "return [...document.querySelectorAll('#explain-texts tr')].map((r) => r.cells[0].textContent);"
    )
    assert texts == [t["text"] for t in doc["texts"]]
    assert texts
    # The quick bundle holds an analog index: each analog shows its training chart and outcome.
    assert doc["analogs"]
    loaded = site.wait("[...document.querySelectorAll('#explain-analogs img')].length === "
                       f"{len(doc['analogs'])} && [...document.querySelectorAll('#explain-analogs img')]"
                       ".every((i) => i.complete && i.naturalWidth > 0)", what="analog images")  # fmt: skip
    assert loaded
    site.shot("dashboard-explanation")
    assert browser.console_errors(site.driver) == []


def test_pause_when_no_token_then_refused_and_with_the_token_then_paused(site: Site) -> None:
    site.open_page()
    driver = site.driver
    site.js("sessionStorage.removeItem('vlmtrader.token');"
            "document.getElementById('token').value = '';")  # fmt: skip
    driver.find_element("id", "pause").click()
    result = site.wait("document.getElementById('control-result').textContent.includes('refused') && "
                       "document.getElementById('control-result').textContent", what="refusal")  # fmt: skip
    assert "401" in result
    assert status_json(site.http)["paused"] is False

    driver.find_element("id", "token").send_keys(API_TOKEN)
    assert site.js("return sessionStorage.getItem('vlmtrader.token');") == API_TOKEN
    assert API_TOKEN not in driver.current_url
    driver.find_element("id", "pause").click()
    site.wait("document.getElementById('control-result').textContent === 'pause: done'",
              what="pause done")  # fmt: skip
    assert status_json(site.http)["paused"] is True
    site.wait("document.getElementById('trading-state').textContent === 'paused'",
              what="the paused state on the page (status event)")  # fmt: skip
    site.shot("dashboard-paused")
    driver.find_element("id", "resume").click()
    site.wait("document.getElementById('control-result').textContent === 'resume: done'",
              what="resume done")  # fmt: skip
    assert status_json(site.http)["paused"] is False


def test_theme_when_toggled_then_dark_colours_and_back(site: Site) -> None:
    site.open_page()
    light = site.js("return getComputedStyle(document.body).backgroundColor;")
    site.driver.find_element("id", "theme").click()
    assert site.js("return document.documentElement.dataset.theme;") == "dark"
    dark = site.js("return getComputedStyle(document.body).backgroundColor;")
    assert dark != light
    site.shot("dashboard-dark")
    site.driver.find_element("id", "theme").click()
    assert site.js("return getComputedStyle(document.body).backgroundColor;") == light


def test_http_when_asked_then_csp_on_the_page_events_stream_and_bad_input_refused(
    site: Site,
) -> None:
    http = site.http
    for path in ("/", "/dashboard"):
        page = http.get(path)
        assert page.status_code == 200
        assert "text/html" in page.headers["content-type"]
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
    assert http.get("/vendor/lightweight-charts.standalone.production.js").status_code == 200
    for path in ("/static/../daemon/app.py", "/static/%2e%2e/app.py", "/static/..%2fapi/app.py",
                 "/vendor/%2e%2e/%2e%2e/app.py", "/static/nothing.js"):  # fmt: skip
        assert http.get(path).status_code == 404, path
    for query in ({"limit": 0}, {"limit": 10_000}, {"symbol": "../x"}, {"symbol": "A" * 40},
                  {"limit": "ten"}):  # fmt: skip
        assert http.get("/api/bars", params=query).status_code == 422, query
        assert http.get("/api/orders", params=query).status_code == 422, query
    assert http.get("/api/equity", params={"days": 0}).status_code == 422
    orders = http.get("/api/orders", params={"limit": 2}).json()["orders"]
    assert len(orders) == 2
    assert orders[0]["created_ts"] >= orders[1]["created_ts"]
    bars = http.get("/api/bars", params={"limit": 3}).json()["bars"]
    assert bars
    assert all(0 < len(v) <= 3 for v in bars.values())
    rejections = http.get("/api/risk").json()["rejections"]
    assert all(isinstance(n, int) and n > 0 for n in rejections.values())

    with http.stream("GET", "/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines: list[str] = []
        deadline = time.monotonic() + 30
        for line in stream.iter_lines():
            lines.append(line)
            if "event: bar" in lines or time.monotonic() > deadline:
                break
    assert lines[0] == "event: status"
    assert "event: bar" in lines
    assert journal_path(site.shots).exists()
