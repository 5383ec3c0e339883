from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from daemon.cli import main
from daemon.training.dataset import load_dataset_config
from daemon.training.paraphrase import LlmParaphraser
from tests.vlm_engine.synth import bars_frame, random_window
from vlm_engine.labels import ParaphraseConfig, ParaphraseFailed, TextGenerator, chart_facts

SMALL = "version: t1\nstride: 5\nspec:\n  window: 16\n  width: 48\n  height: 48\n  sma: [5]\n  bollinger_period: 10\n"


def test_dataset_config_when_example_file_then_loads() -> None:
    cfg = load_dataset_config(
        Path(__file__).resolve().parents[2] / "config" / "dataset-example.yaml"
    )
    assert cfg.spec.window == 64
    assert cfg.outcome.horizon == 5


def test_dataset_config_when_bare_spec_then_wrapped(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("window: 32\nrsi: true\n")
    cfg = load_dataset_config(path)
    assert cfg.spec.window == 32
    assert cfg.spec.rsi


def test_dataset_build_when_bar_dir_then_manifest_and_info(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bars = tmp_path / "bars"
    bars.mkdir()
    frame = bars_frame(("SIMA", "SIMB"), n=300)
    frame[frame.symbol == "SIMA"].to_csv(bars / "a.csv", index=False)
    frame[frame.symbol == "SIMB"].to_parquet(bars / "b.parquet")
    spec = tmp_path / "ds.yaml"
    spec.write_text(SMALL)
    out = tmp_path / "out"
    args = [
        "dataset",
        "build",
        "--bars",
        str(bars),
        "--spec",
        str(spec),
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main([*args, "--seed", "3"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["version"] == "t1"
    assert manifest["seed"] == 3
    assert [s["name"] for s in manifest["sources"]] == ["a.csv", "b.parquet"]
    digests = [
        hashlib.sha256((bars / s["name"]).read_bytes()).hexdigest() for s in manifest["sources"]
    ]
    assert [s["sha256"] for s in manifest["sources"]] == digests
    assert manifest["counts"]["train"] > 0
    assert main(args) == 1  # out is not empty
    assert "not empty" in capsys.readouterr().err
    assert main(["dataset", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert manifest["dataset_hash"] in text
    assert "train" in text


def test_file_source_when_hashing_then_uses_the_bundles_sha256_file() -> None:
    from daemon.training import dataset
    from vlm_engine.bundle.bundle import sha256_file

    assert dataset.sha256_file is sha256_file  # one SHA-256 of a file, not a copy per package


def test_dataset_build_when_sim_then_builds(tmp_path: Path) -> None:
    spec = tmp_path / "ds.yaml"
    spec.write_text(SMALL)
    out = tmp_path / "sim"
    code = main(
        [
            "dataset",
            "build",
            "--sim",
            "--sim-bars",
            "200",
            "--sim-symbols",
            "SIMA,SIMB",
            "--spec",
            str(spec),
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sources"][0]["name"].startswith("sim:")
    assert sum(manifest["counts"].values()) > 0


def test_dataset_build_when_bad_config_then_exit_2_naming_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("stride: 0\n")
    assert (
        main(["dataset", "build", "--sim", "--spec", str(spec), "--out", str(tmp_path / "o")]) == 2
    )
    err = capsys.readouterr().err
    assert "bad.yaml" in err
    assert "stride" in err


def test_dataset_info_when_not_a_dataset_then_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dataset", "info", str(tmp_path)]) == 1
    assert "no manifest" in capsys.readouterr().err


# --- LLM paraphrase client against a local OpenAI-compatible server -------------------------------


class _ChatHandler(BaseHTTPRequestHandler):
    requests: list[dict] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"body": body, "auth": self.headers.get("Authorization")})
        text = body["messages"][-1]["content"]
        if "SLOW" in text:
            time.sleep(1.0)
        if "ERR" in text:
            self.send_response(500)
            self.end_headers()
            return
        if "BAD" in text:
            payload = b"not json"
        else:
            answer = (
                "I'm sorry, I can't help with that." if "NO" in text else f"Put differently: {text}"
            )
            payload = json.dumps(
                {"choices": [{"message": {"role": "assistant", "content": answer}}]}
            ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def chat_url() -> Iterator[str]:
    _ChatHandler.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ChatHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def _client(url: str, tmp_path: Path) -> LlmParaphraser:
    config = ParaphraseConfig(url=url, timeout_seconds=0.3, cache_dir=str(tmp_path / "cache"))
    return LlmParaphraser(config=config, api_key="k-test", cache_dir=tmp_path / "cache")


def test_paraphraser_when_server_answers_then_paraphrase_cached_on_disk(
    chat_url: str, tmp_path: Path
) -> None:
    client = _client(chat_url, tmp_path)
    assert client("A hammer forms.") == "Put differently: A hammer forms."
    assert client("A hammer forms.") == "Put differently: A hammer forms."
    assert len(_ChatHandler.requests) == 1
    assert _ChatHandler.requests[0]["auth"] == "Bearer k-test"
    assert client.stats == {"ok": 1, "cached": 1}
    fresh = _client(chat_url, tmp_path)
    assert fresh("A hammer forms.") == "Put differently: A hammer forms."
    assert fresh.stats == {"cached": 1}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("SLOW doji.", "timeout"),
        ("ERR doji.", "http_error"),
        ("BAD doji.", "bad_response"),
        ("NO doji.", "refusal"),
    ],
)
def test_paraphraser_when_server_fails_then_raises_and_counts_reason(
    chat_url: str, tmp_path: Path, text: str, reason: str
) -> None:
    client = _client(chat_url, tmp_path)
    with pytest.raises(ParaphraseFailed, match=reason):
        client(text)
    assert client.stats == {reason: 1}
    assert not list((tmp_path / "cache").glob("*.json"))


def test_paraphraser_when_unreachable_then_fallback_to_templates(tmp_path: Path) -> None:
    client = _client("http://127.0.0.1:9/v1", tmp_path)
    gen = TextGenerator(paraphrase=client)
    labels = gen.describe(chart_facts(random_window(seed=2)))
    assert labels
    assert all(label.kind != "paraphrase" for label in labels)
    assert gen.paraphrase_stats["fallback"] == len(labels)
    assert client.stats["unreachable"] == len(labels)


def test_dataset_build_when_paraphrase_configured_then_paraphrases_in_texts(
    chat_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "ds.yaml"
    spec.write_text(SMALL + f"paraphrase:\n  url: {chat_url}\n  cache_dir: {tmp_path / 'cache'}\n")
    out = tmp_path / "out"
    code = main(
        [
            "dataset",
            "build",
            "--sim",
            "--sim-bars",
            "150",
            "--sim-symbols",
            "SIMA",
            "--spec",
            str(spec),
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    assert re.search(r"paraphrases: .*ok \d+", capsys.readouterr().out)
    import pandas as pd

    texts = [t for row in pd.read_parquet(out / "parquet" / "train.parquet")["texts"] for t in row]
    assert any(t.startswith("Put differently:") for t in texts)
