"""An unreachable Redis in one line, without its password (the table over every command is
tests/integration/test_unreachable.py)."""

from __future__ import annotations

import pytest
from redis.exceptions import AuthenticationError, ConnectionError

from schemas.errors import UnavailableError
from streams.config import shown_url
from streams.redis_client import check_reachable, redis_reason
from tests.unreachable import SilentServer
from tooling.stack import free_port


async def test_the_workers_start_check_says_redis_refuses_in_one_line() -> None:
    port = free_port()
    with pytest.raises(UnavailableError) as info:
        await check_reachable(f"redis://worker:s3cret@127.0.0.1:{port}/0")
    assert str(info.value) == (
        f"cannot reach Redis at redis://worker:***@127.0.0.1:{port}/0:"
        " connection refused (is Redis running there?)"
    )


async def test_the_workers_start_check_ends_when_redis_never_answers() -> None:
    with SilentServer() as silent, pytest.raises(UnavailableError) as info:
        await check_reachable(f"redis://127.0.0.1:{silent.port}/0", timeout_s=1)
    assert str(info.value) == f"cannot reach Redis at redis://127.0.0.1:{silent.port}/0: timed out"


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (TimeoutError(), "timed out"),
        (
            AuthenticationError("invalid username-password pair or user is disabled."),
            "invalid username-password pair or user is disabled.",
        ),
        (
            ConnectionError("Error -2 connecting to nohost:6379. Name or service not known."),
            "Error -2 connecting to nohost:6379. Name or service not known.",
        ),
        (
            AuthenticationError("HELLO must be called with the client already authenticated, ..."),
            "authentication required (give the user and password in the URL)",
        ),
        (
            AuthenticationError("Authentication required."),
            "authentication required (give the user and password in the URL)",
        ),
        (OSError(), "OSError"),
    ],
)
def test_redis_reasons_are_redis_pys_but_for_refusals_and_timeouts(
    exc: BaseException, reason: str
) -> None:
    assert redis_reason(exc) == reason


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://:pw@localhost:6379/0", "redis://:***@localhost:6379/0"),
        ("rediss://user:p%40ss@redis.example:6380/2", "rediss://user:***@redis.example:6380/2"),
        ("redis://user:pw@[::1]:6379", "redis://user:***@[::1]:6379"),
        ("redis://user@localhost", "redis://user@localhost"),
    ],
)
def test_shown_url_hides_only_the_password(url: str, shown: str) -> None:
    assert shown_url(url) == shown
