"""Schemathesis generates requests from the served OpenAPI schema: the API never answers 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from daemon.api.app import build_app
from daemon.api.metrics import Metrics
from daemon.control import Controller
from tests.daemon.test_bus_control import FakeDaemon
from tests.integration.test_http_api import TOKEN, MeanReversion

pytestmark = pytest.mark.integration
app = build_app(
    controller=Controller(control=FakeDaemon()),
    metrics=Metrics(),
    predictor=MeanReversion(),
    token=TOKEN,
)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_when_fuzzed_from_openapi_then_no_server_error(case: schemathesis.Case) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Bearer {TOKEN}"}, checks=[not_a_server_error]
    )
