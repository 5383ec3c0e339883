"""`vlmtrader run` with the quick bundle and the HTTP API: each order's explanation, its chart and its
analogs over real HTTP (no token), and path tricks that never reach a file outside the charts dir."""

from __future__ import annotations

import http.client
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from daemon.cli import main as cli_main
from tests.daemon.ml_helpers import quick_bundle
from tests.integration.daemon_process import read_db
from tests.integration.e2e_helpers import (
    e2e_config,
    journal_path,
    log_events,
    orders_in_journal,
    running_daemon,
    until,
)
from vlm_engine.render.png import decode_png

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


class Served:
    def __init__(self, tmp_path: Path, port: int, client: httpx.Client, first: str) -> None:
        self.tmp_path, self.port, self.http, self.first = tmp_path, port, client, first

    def raw(self, path: str) -> tuple[int, bytes]:
        """GET with the path sent exactly as written (http.client does not normalise it)."""
        con = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            con.putrequest("GET", path, skip_accept_encoding=True)
            con.endheaders()
            response = con.getresponse()
            return response.status, response.read()
        finally:
            con.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp_path = tmp_path_factory.mktemp("explain-http")
    shutil.copytree(quick_bundle(), tmp_path / "state" / "bundles" / "default")
    config = e2e_config(
        tmp_path,
        api=True,
        speed=600.0,
        extra={
            "scorer": {"kind": "ml", "runtime": "torch"},
            "strategy": {
                "hold_bars": 3,
                "position_notional": 5000,
                "min_confidence": 0.0,
                "enter_threshold": 0.51,
            },
        },
    )
    with running_daemon(config, tmp_path) as daemon:
        (started,) = log_events(daemon, "api.started")
        port = int(started["port"])
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            until(lambda: orders_in_journal(tmp_path) > 0, daemon=daemon, timeout=90,
                  what="an order")  # fmt: skip
            with read_db(journal_path(tmp_path)) as con:
                first = con.execute("SELECT client_order_id FROM orders ORDER BY seq").fetchone()[0]
            until(lambda: client.get(f"/orders/{first}/explain").status_code == 200,
                  daemon=daemon, timeout=30, what="its explanation")  # fmt: skip
            yield Served(tmp_path, port, client, first)


def test_explain_when_order_placed_then_json_chart_and_analogs_are_served(served: Served) -> None:
    doc: dict[str, Any] = served.http.get(f"/orders/{served.first}/explain").json()
    assert doc["client_order_id"] == served.first
    assert doc["scorer"] == "ml"
    chart = served.http.get(doc["chart"]["url"])
    assert chart.status_code == 200
    assert chart.headers["content-type"] == "image/png"
    _, meta = decode_png(chart.content)
    assert meta.spec_hash == doc["spec_hash"]
    assert meta.symbol == doc["symbol"]
    assert doc["analogs"], "the quick bundle has an analog index"
    analog = served.http.get(doc["analogs"][0]["chart_url"])
    assert analog.status_code == 200
    assert analog.content.startswith(b"\x89PNG")
    assert served.http.get("/orders/NOPE-1/explain").status_code == 404


TRICKS = (
    "/charts/../journal.sqlite",
    "/charts/..%2Fjournal.sqlite",
    "/charts/%2e%2e%2fjournal.sqlite",
    "/charts/%2e%2e/journal.sqlite",
    "/charts/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
    "/charts//etc/passwd",
    "/charts/%2Fetc%2Fpasswd",
    "/charts/" + "a" * 64 + ".png%00",
    "/charts/" + "A" * 64 + ".png",
    "/charts/" + "a" * 64 + ".png/../../journal.sqlite",
    "/charts/" + "a" * 4000 + ".png",
    "/orders/../journal.sqlite/explain",
    "/orders/%2e%2e%2fjournal.sqlite/explain",
    "/orders/..%2F..%2Fjournal.sqlite/explain",
    "/orders/%00/explain",
    "/orders/" + "A" * 500 + "/explain",
    "/analogs/../journal.sqlite",
    "/analogs/%2e%2e%2fjournal.sqlite",
    "/analogs/-1.png",
    "/analogs/99999999.png",
    "/analogs/1234567890123.png",
)


@pytest.mark.parametrize("path", TRICKS)
def test_explain_routes_when_path_tricks_then_404_or_422_and_no_file(
    served: Served, path: str
) -> None:
    status, body = served.raw(path)
    assert status in (404, 422), (path, status)
    assert b"SQLite format 3" not in body
    assert b"root:" not in body


def test_cli_explain_when_daemon_wrote_it_then_prints_the_analogs_outcomes(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    state = served.tmp_path / "state"
    assert cli_main(["explain", served.first, "--state-dir", str(state)]) == 0
    out = capsys.readouterr().out
    assert "nearest training charts, and what followed them:" in out
    assert "forward return" in out
