"""Every test session runs the engine that ``streams.engine_build.select()`` chooses."""

from __future__ import annotations

import os
import shutil

import pytest

from streams import engine_build


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # Before collection imports any test module: a stale mypyc build must never be tested.
    engine_build.select()


@pytest.fixture(scope="session")
def promtool() -> str:
    """Debian's ``promtool`` (rules and dashboard queries); a failure in CI, a skip elsewhere."""
    path = shutil.which("promtool")
    if path is None:
        message = "promtool not found: install Debian's prometheus package (make install)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path
