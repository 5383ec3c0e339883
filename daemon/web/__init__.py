"""The dashboard's static assets (HTML, CSS, JS) and the vendored chart library, shipped as package
data; daemon/api/dashboard.py serves them."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
VENDOR = HERE / "vendor"
