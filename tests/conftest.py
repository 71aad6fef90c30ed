"""Every test session runs the engine that ``streams.engine_build.select()`` chooses."""

from __future__ import annotations

import pytest

from streams import engine_build


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # Before collection imports any test module: a stale mypyc build must never be tested.
    engine_build.select()
