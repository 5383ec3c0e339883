"""`vlmtrader serve` as a real process, hit with real HTTP requests: batching, chart PNGs, hot-swap, SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from daemon.api.config import ApiConfig
from daemon.cli import main
from daemon.serve import ServeConfig, serve
from strategy.bars import Window
from tests.daemon.ml_helpers import WINDOW, quick_bundle, sample_windows
from tests.integration.daemon_process import REPO
from tests.integration.mosquitto import free_port
from vlm_engine.render import chart_meta, decode_spec, encode_png, make_renderer
from vlm_engine.render.spec import ChartSpec

pytestmark = pytest.mark.integration
TOKEN = "serve-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)
_SERVE = (sys.executable, "-m", "daemon.cli", "serve")


class ServeProcess:
    """`python -m daemon.cli serve ...` on a free loopback port, JSON logs captured to a file."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"serve-{self.port}.log"
        self.err_path = tmp / f"serve-{self.port}.err"
        env = {**os.environ, "VLMTRADER_API_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [*_SERVE, "--port", str(self.port), "--log-format", "json", *args],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=err,
            )

    def wait_listening(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                msg = f"serve exited with {self.proc.returncode}: {self.err_path.read_text()}"
                raise AssertionError(msg)
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        msg = f"serve did not listen on {self.port}"
        raise AssertionError(msg)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # A probe may time out while the loader thread imports the model stack (imports hold
            # the GIL: ~0.25 s quiet, over the probe's 1 s at load 15-20): not ready yet.
            with contextlib.suppress(httpx.TimeoutException):
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            assert self.proc.poll() is None, self.err_path.read_text()
            time.sleep(0.1)
        msg = "serve did not become ready"
        raise AssertionError(msg)

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
        return out

    def terminate(self, timeout: float = 20.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@contextlib.contextmanager
def serving(tmp: Path, *args: str) -> Iterator[ServeProcess]:
    process = ServeProcess(tmp, *args)
    try:
        process.wait_listening()
        yield process
    finally:
        process.kill()


def _json_bars(window: Window) -> list[dict[str, Any]]:
    return [
        {
            "ts": datetime.fromtimestamp(int(window.timestamps[i]), tz=UTC).isoformat(),
            "open": float(window.open[i]),
            "high": float(window.high[i]),
            "low": float(window.low[i]),
            "close": float(window.close[i]),
            "volume": float(window.volume[i]),
        }
        for i in range(len(window))
    ]


def _rising(n: int) -> list[dict[str, Any]]:
    return [
        {"ts": (T0 + timedelta(minutes=i)).isoformat(), "open": 100.0 + i, "high": 102.0 + i}
        | {"low": 99.0 + i, "close": 101.0 + i, "volume": 1000.0}
        for i in range(n)
    ]


def _count(client: httpx.Client, histogram: str, **labels: str) -> float:
    """Observations of vlmtrader_<histogram>_seconds on the service's /metrics, summed over the
    series whose labels include `labels` (inference has one series per scorer)."""
    text = client.get("/metrics").text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == f"vlmtrader_{histogram}_seconds_count" and labels.items() <= s.labels.items()
    )


def _chart_png(spec: ChartSpec, window: Window) -> bytes:
    image = make_renderer(spec).render_batch([window])[0]
    return encode_png(np.ascontiguousarray(image), chart_meta(spec, window))


async def _concurrent_predictions(
    url: str, n: int, bars: list[dict[str, Any]], *, closed_ok: bool = False
) -> list[int]:
    """Status codes of n concurrent /predict calls; -1 for a connection the server closed
    (allowed only with closed_ok: a request that had not reached a stopping server)."""

    async def one(client: httpx.AsyncClient, i: int) -> int:
        try:
            r = await client.post("/predict", json={"symbol": f"S{i}", "bars": bars})
        except httpx.TransportError:
            if not closed_ok:
                raise
            return -1
        return r.status_code

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        return list(await asyncio.gather(*(one(client, i) for i in range(n))))


def test_serve_when_rules_then_batched_predictions_png_refused_and_sigterm_exits_cleanly(
    tmp_path: Path,
) -> None:
    with serving(tmp_path, "--rules", "--max-wait-ms", "50") as server:
        c = httpx.Client(base_url=server.url, timeout=10)
        assert c.get("/readyz").json() == {
            "ready": True,
            "checks": {"model_warm": True, "accepting": True},
        }
        spec = c.get("/openapi.json").json()
        assert set(spec["paths"]) >= {"/predict", "/healthz", "/readyz", "/metrics"}
        body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
        assert set(body) == {"application/json", "image/png", "multipart/form-data"}
        assert "PredictRequest" in spec["components"]["schemas"]

        codes = asyncio.run(_concurrent_predictions(server.url, 40, _rising(30)))
        assert codes == [200] * 40
        status = c.get("/status").json()
        assert status["requests"] == 40
        assert status["batches"] < 40  # requests shared model calls
        assert status["largest_batch"] > 1
        assert "vlmtrader_inference_seconds_count" in c.get("/metrics").text

        inferred = _count(c, "inference")
        assert inferred >= status["batches"]  # every model call is observed
        r = c.post("/predict", json={"symbol": "AAA", "bars": _rising(30)})
        assert (r.json()["scorer"], r.json()["bundle_id"]) == ("rules", None)
        assert _count(c, "inference") == inferred + 1
        assert _count(c, "inference", scorer="rules") == inferred + 1  # every call, by its scorer
        assert _count(c, "render") == 0  # the rule scorer draws no charts
        png = c.post(
            "/predict", content=b"\x89PNG\r\n\x1a\n", headers={"content-type": "image/png"}
        )
        assert png.status_code == 409
        assert "bundle" in png.json()["detail"]
        assert c.post("/predict", json={"symbol": "AAA", "bars": _rising(3)}).status_code == 422
        assert c.post("/control/pause", headers=AUTH).status_code == 409
        assert c.post("/bundle/reload", json={}).status_code == 401
        searched = c.get("/search", params={"q": "hammer"})
        assert searched.status_code == 409
        assert "none is loaded" in searched.json()["detail"]

        async def in_flight_then_stop() -> list[int]:
            task = asyncio.create_task(
                _concurrent_predictions(server.url, 20, _rising(30), closed_ok=True)
            )
            await asyncio.sleep(0.05)
            server.proc.send_signal(signal.SIGTERM)
            return await task

        finished = asyncio.run(in_flight_then_stop())
        assert server.proc.wait(20) == 0
    # Requests in flight finish (200) or are turned away (503); none fails inside the server.
    assert all(code in (200, 503, -1) for code in finished)
    events = [e["event"] for e in server.events()]
    assert events[-1] == "serve.stopped"
    assert "api.stopped" in events


def test_serve_when_bundle_then_ml_json_clip_png_hot_swap_and_clean_stop(tmp_path: Path) -> None:
    bundle = quick_bundle()
    copy = tmp_path / "bundle-v2"
    shutil.copytree(bundle, copy)
    spec = decode_spec((bundle / "chart_spec.json").read_bytes())
    windows = sample_windows()
    window = next(w for w in windows if len(w) == WINDOW)
    args = ("--bundle", str(bundle), "--device", "cpu", "--runtime", "onnx")
    with serving(tmp_path, *args) as server:
        server.wait_ready()
        c = httpx.Client(base_url=server.url, timeout=30)
        status = c.get("/status").json()
        bundle_id = status["bundle_id"]
        assert status["spec_hash"] == spec.spec_hash()
        assert status["runtime"] == "onnx"  # --runtime served CLIP on the bundle's ONNX export
        chosen = [e for e in server.events() if e["event"] == "engine.runtime_chosen"]
        assert [(e["requested"], e["chosen"]) for e in chosen] == [("onnx", "onnx")]

        inferred, rendered = _count(c, "inference"), _count(c, "render")
        ml = c.post("/predict", json={"symbol": window.symbol, "bars": _json_bars(window)})
        assert ml.status_code == 200, ml.text
        assert (ml.json()["scorer"], ml.json()["bundle_id"]) == ("ml", bundle_id)
        # The ML scorer drew the window's chart and ran the models: both histograms observed it.
        assert _count(c, "inference") == inferred + 1
        assert _count(c, "render") == rendered + 1
        short = c.post("/predict", json={"symbol": "A", "bars": _rising(10)})
        assert short.status_code == 422
        assert f"needs at least {WINDOW}" in short.json()["detail"]

        png = _chart_png(spec, window)
        raw = c.post("/predict", content=png, headers={"content-type": "image/png"})
        assert raw.status_code == 200, raw.text
        scored = raw.json()
        assert (scored["scorer"], scored["bundle_id"], scored["symbol"]) == (
            "clip",
            bundle_id,
            window.symbol,
        )
        assert 0.0 <= scored["p_up"] <= 1.0
        assert sum(scored["patterns"].values()) == pytest.approx(1.0, abs=1e-3)
        assert scored["ts"].startswith(window.ts.strftime("%Y-%m-%dT%H:%M"))
        form = c.post("/predict", files={"file": ("chart.png", png, "image/png")})
        assert form.status_code == 200, form.text
        assert form.json()["p_up"] == pytest.approx(scored["p_up"], abs=1e-6)
        # windows (ml) and chart PNGs (clip) are timed in their own series
        assert _count(c, "inference", scorer="ml") == inferred + 1
        assert _count(c, "inference", scorer="clip") == 2

        other = msgspec.structs.replace(spec, volume=not spec.volume)
        mismatch = c.post(
            "/predict", content=_chart_png(other, window), headers={"content-type": "image/png"}
        )
        assert mismatch.status_code == 409
        assert spec.spec_hash() in mismatch.json()["detail"]
        garbage = c.post("/predict", content=png[:40], headers={"content-type": "image/png"})
        assert garbage.status_code == 422
        searched = c.get("/search", params={"q": "hammer"})  # serve holds no bars to search
        assert searched.status_code == 409
        assert "vlmtrader search" in searched.json()["detail"]
        assert (
            c.post("/predict", files={"other": ("x.txt", b"hi", "text/plain")}).status_code == 422
        )

        async def swap_under_load() -> tuple[list[int], httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
                load = asyncio.create_task(
                    _concurrent_predictions(server.url, 16, _json_bars(window))
                )
                reload = await client.post("/bundle/reload", headers=AUTH, json={"path": str(copy)})
                return await load, reload

        codes, reload = asyncio.run(swap_under_load())
        assert codes == [200] * 16
        assert reload.status_code == 200, reload.text
        assert reload.json()["detail"]["bundle_id"] == bundle_id
        assert c.get("/status").json()["bundle_path"] == str(copy)
        bad = c.post("/bundle/reload", headers=AUTH, json={"path": str(tmp_path / "nope")})
        assert bad.status_code == 409
        assert "no such bundle directory" in bad.json()["error"]
        assert c.get("/status").json()["bundle_path"] == str(copy)
        assert c.post("/predict", content=png, headers={"content-type": "image/png"}).is_success
        assert server.terminate() == 0
    loaded = [e for e in server.events() if e["event"] == "bundle.loaded" and "previous" in e]
    assert [e["path"] for e in loaded] == [str(bundle), str(copy)]


def test_serve_when_bundle_unusable_then_one_line_error_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty-bundle"
    empty.mkdir()
    config = ServeConfig(api=ApiConfig(enabled=True, port=0), device="cpu")
    code = asyncio.run(serve(config, bundle=empty, token=None))
    error = capsys.readouterr().err.strip()
    assert code == 2
    assert error.startswith(f"error: {empty}: ")
    assert "\n" not in error
    saved = structlog.get_config()  # the CLI configures logging for the process: undo it after
    try:
        assert main(["serve", "--bundle", str(tmp_path / "nope")]) == 2
    finally:
        structlog.configure(**saved)
    assert (
        capsys.readouterr().err.strip() == f"error: {tmp_path / 'nope'}: no such bundle directory"
    )
