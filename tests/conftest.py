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


def _prometheus_package_tool(name: str) -> str:
    """A program of Debian's prometheus package; missing: a failure in CI, a skip elsewhere."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not found: install Debian's prometheus package (make install)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    """``promtool`` (rules and dashboard queries)."""
    return _prometheus_package_tool("promtool")


@pytest.fixture(scope="session")
def prometheus() -> str:
    """The ``prometheus`` server (rules run against live series)."""
    return _prometheus_package_tool("prometheus")
