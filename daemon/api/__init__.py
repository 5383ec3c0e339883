"""HTTP API on the daemon's own event loop: health, readiness, metrics, status, predict, control.

Import the pieces from their modules: daemon.api.app (build_app, which includes the routes of
daemon.api.status, daemon.api.predict and daemon.api.commands), daemon.api.server (ApiServer),
daemon.api.metrics (Metrics), daemon.api.config (ApiConfig).
"""
