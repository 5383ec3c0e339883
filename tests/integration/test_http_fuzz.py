"""Schemathesis generates requests from the OpenAPI schema a real `vlmtrader run` (paper-sim)
serves, and sends them to it over HTTP: the API never answers 5xx and the daemon keeps running."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.integration.daemon_process import DaemonProcess
from tests.integration.e2e_helpers import API_TOKEN, e2e_config, log_events, running_daemon

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    tmp_path = tmp_path_factory.mktemp("http-fuzz")
    with running_daemon(e2e_config(tmp_path, api=True), tmp_path) as process:
        yield process


def test_api_when_fuzzed_from_openapi_then_no_server_error(daemon: DaemonProcess) -> None:
    (started,) = log_events(daemon, "api.started")
    schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{started['port']}/openapi.json")
    labels: list[str] = []
    # Per operation, like @schema.parametrize (whose pytest plugin does not run on pytest 9).
    for result in schema.get_all_operations():
        operation = result.ok()
        labels.append(operation.label)

        @given(case=operation.as_strategy())
        @settings(
            max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def call(case: schemathesis.Case) -> None:
            case.call_and_validate(
                headers={"Authorization": f"Bearer {API_TOKEN}"},
                checks=[not_a_server_error],
                timeout=60,  # a first bundle load imports torch, even for a bad path
            )
            assert daemon.proc.poll() is None

        call()

    assert {"POST /predict", "POST /control/{command}", "GET /status"} <= set(labels)
