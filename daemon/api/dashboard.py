"""The web dashboard's page and assets: GET / and /dashboard, /static/*, /vendor/*, each with a
Content-Security-Policy that allows only this origin's own scripts, styles and connections."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from daemon.web import STATIC, VENDOR

VENDORED_FILE = "lightweight-charts.standalone.production.js"
VENDORED_SHA256 = "e21cc5caa0226ef30bd8549c50b9ef926615f2a4ee6b4e486353477a55f598cf"

# The one inline style allowed: the <style> the chart library adds for its TradingView attribution
# logo (by its sha256; tests/daemon/test_dashboard_routes.py recomputes it from the vendored file).
ATTRIBUTION_STYLE_SHA256 = "3pRED1tOXas1FXFoPb9TGCjmYe9XQsmO9OV23khV2nY="
# No inline script, no other origin; images may be data: URLs (the empty favicon) or ours.
CSP = (
    "default-src 'none'; script-src 'self'; "
    f"style-src 'self' 'sha256-{ATTRIBUTION_STYLE_SHA256}'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class _SecureStatic(StaticFiles):
    """StaticFiles (which refuses paths outside its directory) with the security headers."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await super().__call__(scope, receive, send_with_headers)


def install_dashboard(app: FastAPI) -> None:
    """Serve the page at / and /dashboard and its assets under /static and /vendor."""

    async def page() -> FileResponse:
        """The dashboard (read-only without the token; its buttons send the token typed in)."""
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=SECURITY_HEADERS)

    for path in ("/", "/dashboard"):
        app.add_api_route(
            path, page, methods=["GET"], tags=["dashboard"], response_class=FileResponse
        )
    app.mount("/static", _SecureStatic(directory=STATIC), name="static")
    app.mount("/vendor", _SecureStatic(directory=VENDOR), name="vendor")
