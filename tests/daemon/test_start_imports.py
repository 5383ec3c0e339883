"""The trading daemon's start loads only what its config turns on: the HTTP API's stack with
api.enabled, the replay feed's readers with feed.kind replay, the model libraries with a bundle (start -> daemon.ready, issue 16)."""

from __future__ import annotations

from tests.import_probe import modules_loaded_after

HTTP_STACK = ("fastapi", "starlette", "uvicorn")
MODEL_STACK = ("xgboost", "scipy", "torch", "transformers", "onnxruntime")
REPLAY_READERS = ("daemon.feeds.replay", "pyarrow.parquet")

_START = "import daemon.cli.run, daemon.app, daemon.startup, daemon.config"


def test_daemon_start_when_api_disabled_then_http_stack_not_loaded() -> None:
    assert modules_loaded_after(_START, HTTP_STACK) == []


def test_daemon_start_when_feed_is_not_replay_then_replay_readers_not_loaded() -> None:
    assert modules_loaded_after(_START, REPLAY_READERS) == []


def test_daemon_start_when_no_bundle_loaded_yet_then_model_libraries_not_loaded() -> None:
    """xgboost, torch and ONNX Runtime come with the bundle, after daemon.ready."""
    assert modules_loaded_after(_START, MODEL_STACK) == []
