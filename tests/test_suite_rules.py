"""The suite's own rules: what a test does when this machine lacks what it needs."""

from __future__ import annotations

import pytest

from conftest import REQUIRE_ENV, missing


def test_a_missing_resource_skips_with_its_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="no PostgreSQL server"):
        missing("no PostgreSQL server")


def test_under_require_all_a_missing_resource_fails_with_its_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in CI (.ci/run sets CNNSWEEP_REQUIRE=all): a broken service or a moved dataset cannot pass as a skip."""
    monkeypatch.setenv(REQUIRE_ENV, "all")
    with pytest.raises(pytest.fail.Exception, match=r"no PostgreSQL server \(CNNSWEEP_REQUIRE=all: no test may skip\)"):
        missing("no PostgreSQL server")
