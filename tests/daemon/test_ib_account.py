"""The IB account: ib.account in YAML, else $VLMTRADER_IB_ACCOUNT, else IB's single account."""

from __future__ import annotations

import pytest

from daemon.ib.config import ACCOUNT_ENV, IbConfig


def test_account_when_yaml_empty_then_environment_else_yaml_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ACCOUNT_ENV, raising=False)
    assert IbConfig().effective_account == ""
    monkeypatch.setenv(ACCOUNT_ENV, " DU7654321 ")
    assert IbConfig().effective_account == "DU7654321"
    assert IbConfig(account="DU1111111").effective_account == "DU1111111"
