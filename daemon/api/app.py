"""The FastAPI app: the body limit around three groups of routes, each in its own module:
health, readiness, metrics and status (daemon/api/status.py), predict (daemon/api/predict.py),
chart search (daemon/api/search.py) and operator commands (daemon/api/commands.py), and the web
dashboard (daemon/api/dashboard.py, with its live events and JSON in daemon/api/live_routes.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI
from pydantic import BaseModel

from daemon.api.asgi import BodyLimit
from daemon.api.auth import require_token
from daemon.api.commands import command_routes
from daemon.api.config import ApiConfig
from daemon.api.dashboard import install_dashboard
from daemon.api.explain import explain_routes
from daemon.api.journal_reader import JournalReader
from daemon.api.live import LiveHub
from daemon.api.live_routes import live_routes
from daemon.api.metrics import Metrics
from daemon.api.predict import Predictor, PredictRequest, predict_routes
from daemon.api.search import Searcher, search_routes
from daemon.api.status import status_routes
from daemon.control import Controller


def build_app(
    *,
    controller: Controller,
    metrics: Metrics,
    predictor: Predictor | None = None,
    token: str | None = None,
    config: ApiConfig | None = None,
    state_dir: Path | None = None,
    analogs: Callable[[], Any] | None = None,
    searcher: Searcher | None = None,
    live: LiveHub | None = None,
    journal_path: Path | None = None,
) -> FastAPI:
    """Build the app around the running daemon's controller; `token` guards mutating endpoints.
    state_dir adds the read-only explanation routes (analogs(): the loaded bundle's index);
    `live` (the daemon's LiveHub) adds the dashboard, reading the journal at `journal_path`."""
    cfg = config if config is not None else ApiConfig()
    control = controller.control
    authorized = Depends(require_token(token, token_env=cfg.token_env))
    app = FastAPI(
        title="vlmtrader",
        version="0.1.0",
        description="Health, metrics, status, predictions and control of a vlmtrader daemon.",
    )

    app.add_middleware(BodyLimit, max_bytes=cfg.max_body_bytes)
    app.include_router(status_routes(control=control, metrics=metrics))
    app.include_router(predict_routes(predictor=predictor, cfg=cfg))
    app.include_router(search_routes(searcher=searcher))
    app.include_router(command_routes(controller=controller, authorized=authorized, cfg=cfg))
    if state_dir is not None:
        app.include_router(explain_routes(state_dir=state_dir, analogs=analogs))
    if live is not None and cfg.dashboard:
        reader = JournalReader(journal_path) if journal_path is not None else None
        app.include_router(live_routes(hub=live, status=control.status, reader=reader, cfg=cfg))
        install_dashboard(app)
    _document_models(app, PredictRequest)
    return app


def _document_models(app: FastAPI, *models: type[BaseModel]) -> None:
    """Add request models that are read by hand (not as FastAPI body parameters) to the schema."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in models:
            model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, definition in model_schema.pop("$defs", {}).items():
                schemas.setdefault(name, definition)
            schemas.setdefault(model.__name__, model_schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
